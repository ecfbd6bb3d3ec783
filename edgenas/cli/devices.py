"""`edgenas devices ...`: list the bundled profiles, check a device, trust an SSH host key."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devices import DeviceError, HostKey, SshDevice, list_profiles, load_profile, open_device
from devices.known_hosts import known_hosts_name
from devices.measurement import placement_summary
from devices.ssh_connection import revoked_host_message
from edgenas.cli.user_errors import fail
from edgenas.console import err_console
from edgenas.ctrl_c import ctrl_c

devices_app = typer.Typer(
    help="Target devices: bundled profiles, connection checks, SSH host keys.",
    no_args_is_help=True,
)

# paramiko logs its own copy of connection failures (tracebacks included) at ERROR; the
# commands report each failure as one line instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

ProfileArg = Annotated[str, typer.Argument(help="a bundled profile name, or a profile YAML path")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON to stdout")]


@devices_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """The bundled device profiles: name, kind and description."""
    profiles = [load_profile(name) for name in list_profiles()]
    rows = [
        {"name": p.name, "kind": p.kind, "runtime": p.runtime, "description": p.description}
        for p in profiles
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table(title="bundled device profiles", title_justify="left")
    # Names are never cut: twins differ by a suffix (local-cpu-litert, local-cpu-litert-no-amx).
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    for header in ("kind", "runtime", "description"):
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(escape(row[k]) for k in ("name", "kind", "runtime", "description")))
    Console().print(table)


@devices_app.command("check")
def check_command(profile: ProfileArg, as_json: JsonOption = False) -> None:
    """Connect, print the device's fingerprint and a sanity measurement of a tiny model."""
    from devices.sanity_models import sanity_model

    checked = load_profile(profile)
    with open_device(profile) as device, tempfile.TemporaryDirectory() as tmp:
        model = sanity_model(Path(tmp), kind=checked.kind, runtime=checked.runtime)
        fingerprint = device.fingerprint()
        (measurement,) = device.measure([model])
    if as_json:
        result = {
            "device": checked.name,
            "kind": checked.kind,
            "fingerprint": fingerprint.to_dict(),
            "sanity": {**measurement.to_dict(), "model": model.name},
        }
        typer.echo(json.dumps(result))
        return
    table = Table(
        title=f"device {checked.name} ({checked.kind})", title_justify="left", show_header=False
    )
    table.add_column("")
    table.add_column("")
    for key, value in fingerprint.to_dict().items():
        table.add_row(key, escape(str(value)))
    table.add_section()
    table.add_row(
        f"sanity ({escape(model.name)})",
        # significant digits: Vela's estimate of the sanity model, 4.8e-05 ms, read 0.0000
        f"median {measurement.median_ms:.4g} ms, p10 {measurement.p10_ms:.4g}, "
        f"p90 {measurement.p90_ms:.4g}, n {measurement.n}"
        + (" (flagged: noisy)" if measurement.flagged else ""),
    )
    if measurement.placement is not None:
        table.add_row("placement", escape(placement_summary(measurement.placement)))
    Console().print(table)


@devices_app.command("trust")
def trust_command(
    profile: ProfileArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="add the key without asking")] = False,
) -> None:
    """Show an SSH device's host key and add it to known_hosts after confirmation.

    Compare the fingerprint with the one the device itself shows
    (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) before you accept it.
    """
    checked = load_profile(profile)
    if checked.kind != "ssh":
        raise DeviceError(
            f"device {checked.name!r} is of kind {checked.kind!r}; only ssh devices have "
            "host keys to trust"
        )
    device = open_device(profile)
    assert isinstance(device, SshDevice)  # kind ssh
    target = device.target
    key = device.server_host_key()
    if key in target.revoked_keys():
        raise fail(revoked_host_message(target, key))
    known = device.known_host_keys()
    if target.trusts(key):  # by a line for [host]:port, or one for the host alone
        typer.echo(f"{target.host_label} is already trusted ({key.describe()})")
        return
    if known:
        name = known_hosts_name(target.hostname, target.port)
        raise fail(
            f"device {checked.name!r}: known_hosts already holds another key for "
            f"{target.host_label} ({', '.join(k.describe() for k in known)}); the server now "
            f"offers {key.describe()}. If the device was reinstalled, remove the old key "
            f"(ssh-keygen -R '{name}' -f {target.trust_file}) and run this again"
        )
    typer.echo(
        f"device {checked.name}: {target.host_label} offers this host key:\n"
        f"  {key.key_type} {key.fingerprint}\n"
        f"On the device, 'ssh-keygen -lf {_host_key_file(key)}' must show the same fingerprint."
    )
    if not yes:
        try:
            accepted = typer.confirm(f"Add it to {target.trust_file}?", default=False)
        except typer.Abort:
            if ctrl_c.pressed:  # Ctrl-C, not an empty answer: the command's interrupted line
                raise KeyboardInterrupt from None
            accepted = False
        if not accepted:
            err_console.print(
                "not trusted: known_hosts is unchanged", highlight=False, markup=False
            )
            raise typer.Exit(code=1)
    try:
        written = device.trust(key)
    except OSError as exc:
        raise fail(f"cannot write {target.trust_file}: {exc.strerror or exc}") from None
    typer.echo(f"added {key.key_type} key for {target.host_label} to {written}")


def _host_key_file(key: HostKey) -> str:
    kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ssh-dss": "dsa"}.get(key.key_type)
    if kind is None:
        kind = "ecdsa" if key.key_type.startswith("ecdsa") else key.key_type
    return f"/etc/ssh/ssh_host_{kind}_key.pub"
