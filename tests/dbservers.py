"""Real MariaDB and PostgreSQL servers for tests: Debian's binaries, a temp datadir, a free loopback port, stopped at the end.

Each start returns the server's admin URL; `create_database` makes a fresh database with its own password user.
A missing binary skips (fails under CI, which installs both: .ci/run).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest

from fakevendor import free_port

# a password that needs escaping in a URL, as real ones do
PASSWORD = "p@ss/w:rd%1"


def missing(what: str) -> None:
    message = f"{what} is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Server:
    dialect: str
    port: int
    connect: Callable[[str], Any]  # database name -> DB-API connection as the admin
    stop: Callable[[], None]

    def create_database(self, name: str) -> tuple[str, Callable[[], Any]]:
        """A new database and a user owning it: (URL for `oneapi import --from`, connect())."""
        admin = self.connect("mysql" if self.dialect == "mysql" else "postgres")
        admin.autocommit = True
        cursor = admin.cursor()
        if self.dialect == "mysql":
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cursor.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY %s", (PASSWORD,))
            cursor.execute(f"GRANT ALL ON `{name}`.* TO '{name}'@'127.0.0.1'")
        else:
            cursor.execute(f"CREATE USER \"{name}\" PASSWORD '{PASSWORD}'")
            cursor.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        admin.close()
        scheme = "mysql" if self.dialect == "mysql" else "postgres"
        url = f"{scheme}://{name}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/{name}"
        return url, lambda: self._connect_as(name)

    def _connect_as(self, name: str) -> Any:
        if self.dialect == "mysql":
            import pymysql

            return pymysql.connect(host="127.0.0.1", port=self.port, user=name, password=PASSWORD, database=name, charset="utf8mb4")
        import pg8000.dbapi

        return pg8000.dbapi.connect(host="127.0.0.1", port=self.port, user=name, password=PASSWORD, database=name)


def start_mariadb() -> Server:
    server, installer = shutil.which("mariadbd") or shutil.which("mysqld"), shutil.which("mariadb-install-db")
    if not server or not installer:
        missing("mariadb-server")
    import pymysql

    folder = Path(tempfile.mkdtemp(prefix="oneapi-mariadb-"))
    data, socket_path, port = folder / "data", folder / "mysqld.sock", free_port()
    subprocess.run([installer, "--no-defaults", f"--datadir={data}", "--user=root", "--auth-root-authentication-method=normal",
                    "--skip-test-db", "--skip-name-resolve"], check=True, capture_output=True, timeout=120)
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen([server, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
                                f"--socket={socket_path}", "--user=root", "--skip-name-resolve", "--innodb-buffer-pool-size=16M",
                                "--skip-log-bin", f"--pid-file={folder / 'mysqld.pid'}"], stdout=log, stderr=subprocess.STDOUT)

    def connect(database: str) -> Any:
        return pymysql.connect(unix_socket=str(socket_path), user="root", password="", database=database, charset="utf8mb4")

    def stop() -> None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)

    _wait(lambda: connect("mysql").close(), process, stop, folder / "server.log")
    return Server("mysql", port, connect, stop)


def start_postgres() -> Server:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    runuser = shutil.which("runuser")
    if not bins or not runuser:
        missing("postgresql")
    import pg8000.dbapi

    bin_dir = Path(bins[-1])
    # PostgreSQL refuses to run as root: its files belong to the postgres user, in a folder it can reach
    folder = Path(tempfile.mkdtemp(prefix="oneapi-postgres-"))
    shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    as_postgres = [runuser, "-u", "postgres", "--"]
    password_file = folder / "password"
    password_file.write_text(PASSWORD + "\n")
    shutil.chown(password_file, "postgres", "postgres")
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-host=scram-sha-256",
                    "--auth-local=trust", f"--pwfile={password_file}", "--no-sync"], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB"
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90)

    def connect(database: str) -> Any:
        return pg8000.dbapi.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD, database=database)

    def stop() -> None:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

    _wait(lambda: connect("postgres").close(), None, stop, folder / "server.log")
    return Server("postgres", port, connect, stop)


def _wait(probe: Callable[[], None], process: subprocess.Popen[bytes] | None, stop: Callable[[], None], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline or (process is not None and process.poll() is not None):
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                stop()
                raise RuntimeError(f"database server did not start:\n{text}")
            time.sleep(0.1)
