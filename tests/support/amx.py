"""Whether this machine can refuse Intel AMX, and whether it has AMX to refuse."""

from __future__ import annotations

import platform

from devices import runner

X86_64_LINUX = platform.system() == "Linux" and platform.machine() == "x86_64"
# Where the CPU and kernel offer AMX (this project's Xeon does): asking what is offered is
# harmless in the test process, unlike the refusal.
AMX = runner.x86_amx_state() == "available"
