"""The socket daprd can reach: both spellings of the socket-folder variable, the socket's group and
mode, and a connection from another UID (as daprd's image runs, UID 65532) on both servers.

The cross-UID cases need root (to start the component as root and connect as another UID with
setpriv), as CI runs; elsewhere they skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import stack  # noqa: E402
from kitex_fast.dapr import core  # noqa: E402
from kitex_fast.dapr.component import build_parser  # noqa: E402

DAPR_GID = 65532  # daprd's image: USER 65532:65532 (dapr docker/Dockerfile, v1.18.0)
OTHER_UID = 12345  # a UID that owns nothing here


# -- the folder variable: daprd's spelling, the injector's, the default ---------------------------

@pytest.mark.parametrize("env, expected", [
    ({}, core.DEFAULT_SOCKET_FOLDER),
    ({"DAPR_COMPONENTS_SOCKETS_FOLDER": "/a"}, "/a"),
    ({"DAPR_COMPONENT_SOCKETS_FOLDER": "/b"}, "/b"),  # the sidecar injector sets only this one
    ({"DAPR_COMPONENTS_SOCKETS_FOLDER": "/a", "DAPR_COMPONENT_SOCKETS_FOLDER": "/b"}, "/a"),
    ({"DAPR_COMPONENTS_SOCKETS_FOLDER": "", "DAPR_COMPONENT_SOCKETS_FOLDER": "/b"}, "/b"),
])
def test_socket_folder_from_either_variable(monkeypatch: pytest.MonkeyPatch, env: Dict[str, str],
                                            expected: str) -> None:
    for name in (core.SOCKET_FOLDER_ENV, core.SOCKET_FOLDER_ENV_INJECTOR):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert core.socket_path(None, "kitex") == os.path.join(expected, "kitex.sock")
    assert core.socket_path("/given", "kitex") == "/given/kitex.sock"  # --socket-folder wins


def test_differing_variables_are_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(core.SOCKET_FOLDER_ENV, "/a")
    monkeypatch.setenv(core.SOCKET_FOLDER_ENV_INJECTOR, "/b")
    with caplog.at_level("WARNING"):
        core.socket_path(None, "kitex")
    assert "differ" in caplog.text and "/a" in caplog.text and "/b" in caplog.text


# -- the options ----------------------------------------------------------------------------------

def test_socket_group_option_takes_a_gid_or_a_name() -> None:
    parser = build_parser()
    assert parser.parse_args([]).socket_group is None
    assert parser.parse_args(["--socket-group", "65532"]).socket_group == 65532
    grp = pytest.importorskip("grp")
    root_group = grp.getgrgid(0).gr_name
    assert parser.parse_args(["--socket-group", root_group]).socket_group == 0


def test_unknown_socket_group_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--socket-group", "no-such-group-\x01"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--socket-group" in err and "'no-such-group-\\x01'" in err
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--socket-group", "4294967295"])  # (gid_t)-1: "no change"
    assert info.value.code == 2 and "is not a GID" in capsys.readouterr().err


# -- a real component, reached from another UID --------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
# Run as another UID: connect, send the HTTP/2 preface, print the first frame type the server sends
# (4, SETTINGS: both servers send theirs first), or the errno name of a failed connect.
PROBE = r"""
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno)); sys.exit(0)
s.sendall(bytes.fromhex(sys.argv[2]))
head = b""
while len(head) < 9:
    chunk = s.recv(9 - len(head))
    if not chunk:
        break
    head += chunk
print("frame", head[3] if len(head) == 9 else "eof")
"""


def _need_root() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("connecting as another UID needs root (setpriv), as CI runs")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    ran = subprocess.run(["setpriv", "--reuid", str(OTHER_UID), "--regid", str(OTHER_UID), "--clear-groups",
                          sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=30)
    if ran.returncode != 0:
        pytest.skip("this interpreter cannot run as another UID here (its folders are closed to "
                    "others): %s" % ran.stderr.decode(errors="replace")[-300:])


def probe(path: str, uid: int, gid: int) -> str:
    """Connect to ``path`` as uid:gid with no other groups (as daprd's image runs)."""
    proc = subprocess.run(
        ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups",
         sys.executable, "-I", "-c", PROBE, path, PREFACE.hex()],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return proc.stdout.decode(errors="replace").strip()


@pytest.fixture
def shared_folder() -> Iterator[str]:
    """A socket folder as a pod's fsGroup or a host's ``chgrp`` shares it: group DAPR_GID, mode
    0770, and no set-group-ID bit (so the socket's group comes from the component, not the kernel)."""
    base = tempfile.mkdtemp(prefix="kf-sockaccess-")
    os.chmod(base, 0o755)  # (mkdtemp: 0700; the other UID must reach the folder)
    folder = os.path.join(base, "sockets")
    os.mkdir(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(base, ignore_errors=True)


class RawComponent:
    """``python -m kitex_fast.dapr`` with the arguments and environment given, nothing added."""

    def __init__(self, args: List[str], env: Dict[str, str], socket_file: str, log_dir: str) -> None:
        self.socket_file = socket_file
        self.log_path = os.path.join(log_dir, "component.log")
        environ = {k: v for k, v in os.environ.items()
                   if k not in (core.SOCKET_FOLDER_ENV, core.SOCKET_FOLDER_ENV_INJECTOR)}
        environ.update(env)
        with open(self.log_path, "ab") as log:
            self.proc: Optional[subprocess.Popen] = subprocess.Popen(
                [sys.executable, "-m", "kitex_fast.dapr", *args], stdout=log, stderr=log, env=environ)
        stack._live.add(self.proc)

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "serving bindings." not in self.log():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("component exited %s:\n%s" % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                raise AssertionError("component did not serve within %.0f s:\n%s" % (timeout, self.log()))
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self) -> Optional[int]:
        proc, self.proc = self.proc, None
        return stack._stop(proc)


def _start(impl, folder: str, extra: List[str], env: Optional[Dict[str, str]] = None,
           folder_arg: bool = True) -> RawComponent:
    args = ["--name", "kitex", "--implementation", impl.name, "--server", impl.server, *extra]
    if folder_arg:
        args += ["--socket-folder", folder]
    c = RawComponent(args, env or {}, os.path.join(folder, "kitex.sock"), os.path.dirname(folder))
    try:
        c.wait_serving()
    except BaseException:
        c.stop()
        raise
    return c


def test_daprd_uid_in_the_folder_group_connects_by_default(impl, shared_folder: str) -> None:
    """The issue's EACCES: the component as root made its socket 0660 root:root, and daprd (UID
    65532) could not connect. Now the socket takes its folder's group: a UID in that group connects."""
    _need_root()
    os.chown(shared_folder, 0, DAPR_GID)
    os.chmod(shared_folder, 0o770)
    c = _start(impl, shared_folder, [])
    try:
        st = os.lstat(c.socket_file)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (0, DAPR_GID)
        assert probe(c.socket_file, DAPR_GID, DAPR_GID) == "frame 4"
        assert probe(c.socket_file, OTHER_UID, DAPR_GID) == "frame 4"  # any UID, in the group
        assert probe(c.socket_file, OTHER_UID, OTHER_UID) == "EACCES"  # and not beyond it
    finally:
        assert c.stop() == 0


def test_socket_group_option(impl, shared_folder: str) -> None:
    """--socket-group names daprd's group where the folder's is not it (a host's /tmp)."""
    _need_root()
    c = _start(impl, shared_folder, ["--socket-group", "4242"])
    try:
        st = os.lstat(c.socket_file)
        assert st.st_gid == 4242 and stat.S_IMODE(st.st_mode) == 0o660
        assert probe(c.socket_file, DAPR_GID, 4242) == "frame 4"
        assert probe(c.socket_file, DAPR_GID, DAPR_GID) == "EACCES"
    finally:
        assert c.stop() == 0


def test_socket_group_that_cannot_be_set_fails_the_start(impl, shared_folder: str) -> None:
    """Not root and not in the group: a clear error and exit 1, and no socket left behind."""
    _need_root()
    os.chown(shared_folder, DAPR_GID, DAPR_GID)
    args = ["--name", "kitex", "--socket-folder", shared_folder, "--implementation", impl.name,
            "--server", impl.server, "--socket-group", "4242"]
    proc = subprocess.run(["setpriv", "--reuid", str(DAPR_GID), "--regid", str(DAPR_GID), "--clear-groups",
                           sys.executable, "-m", "kitex_fast.dapr", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                          env=dict(os.environ, HOME="/tmp"))
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out
    assert "cannot give" in out and "4242" in out and "--socket-group" in out
    assert not os.path.exists(os.path.join(shared_folder, "kitex.sock"))


def test_injector_variable_places_the_socket(impl, shared_folder: str) -> None:
    """Kubernetes' sidecar injector gives the component container only DAPR_COMPONENT_SOCKETS_FOLDER."""
    c = _start(impl, shared_folder, [], env={core.SOCKET_FOLDER_ENV_INJECTOR: shared_folder}, folder_arg=False)
    try:
        assert stat.S_ISSOCK(os.lstat(c.socket_file).st_mode)
    finally:
        assert c.stop() == 0
    assert not os.path.exists(c.socket_file)


def test_probe_is_not_fooled_by_a_dead_socket(shared_folder: str) -> None:
    """The probe itself: a bound socket nobody listens on is refused, not reported as served."""
    _need_root()
    path = os.path.join(shared_folder, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    os.chmod(path, 0o666)
    assert probe(path, DAPR_GID, DAPR_GID) == "ECONNREFUSED"
