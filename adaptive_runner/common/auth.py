"""The run's CURVE key pairs: the server's and the one client key every job of the run uses."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

from adaptive_runner.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Keys:
    """Z85-encoded CURVE keys; ``server_secret`` is None where only the public half is kept."""

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes


def create_keys(keys_dir: Path) -> None:
    """Create ``server.key(_secret)`` and ``client.key(_secret)`` in a new 0700 ``keys_dir``.

    Secret files are made 0600, so on a shared file system only the owner's jobs can talk to
    the run's database manager.
    """
    keys_dir = Path(keys_dir)
    if (keys_dir / "server.key_secret").exists():
        raise ConfigError(f"{keys_dir} already holds keys; a run keeps the keys it was made with")
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys_dir.chmod(0o700)  # mkdir's mode is filtered by the umask
    for name in ("server", "client"):
        _, secret_file = zmq.auth.create_certificates(keys_dir, name)
        Path(secret_file).chmod(0o600)


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the CURVE key {path}: {e}") from e


def load_keys(keys_dir: Path) -> Keys:
    """Read the keys; the server secret is optional, a readable-by-others secret is refused."""
    keys_dir = Path(keys_dir)
    client_public, client_secret = _load(keys_dir / "client.key_secret")
    if client_secret is None:
        raise ConfigError(f"{keys_dir / 'client.key_secret'} holds no secret key")
    secret_files = [keys_dir / "client.key_secret"]
    server_file = keys_dir / "server.key_secret"
    if server_file.exists():
        secret_files.append(server_file)
    else:
        server_file = keys_dir / "server.key"
    server_public, server_secret = _load(server_file)
    for secret_file in secret_files:
        mode = stat.S_IMODE(secret_file.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{secret_file} is readable by others (mode {mode:o}): "
                f"run 'chmod 600 {secret_file}'; anyone who can read it can talk to the run"
            )
    return Keys(server_public, server_secret, client_public, client_secret)
