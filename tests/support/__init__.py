"""Code the tests (and the benchmarks that need it) share that is neither a test nor a
fixture: the throwaway OpenSSH server (sshd.py)."""
