"""The component's container image (the repository's Dockerfile), as a pod runs it.

Built with podman on a plain Debian base (tests/image/build_image.sh; cached by content), run as its
own non-root user with a socket folder shared with the host, and reached by a real daprd v1.18.0
running as UID/GID 65532 (as Dapr's image runs it), which calls a real Kitex server (Go) through
the component. Skipped with the reason where podman cannot run; under CI with
KITEX_FAST_EXPECT_IMAGE=1 (tests/run.sh sets it after installing podman) that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, List

import pytest

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent / "dapr", HERE.parent / "interop"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import peers  # noqa: E402
import stack  # noqa: E402
from kitex_fast.testing import echo_request, read_echo_reply  # noqa: E402

pytestmark = pytest.mark.slow

DAPR_UID = 65532  # daprd's image: USER 65532:65532 (dapr docker/Dockerfile, v1.18.0)
IMAGE_UID = 65532  # ours (Dockerfile: USER 65532:65532)
SOCKETS_IN_IMAGE = "/tmp/dapr-components-sockets"
BUILD_TIMEOUT = 1500.0


def _unavailable(message: str) -> None:
    if os.environ.get("KITEX_FAST_EXPECT_IMAGE") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def podman() -> Iterator[SimpleNamespace]:
    """The built image and the podman command line that runs it here."""
    missing = [t for t in ("podman", "runc", "mmdebstrap", "setpriv") if shutil.which(t) is None]
    if missing:
        _unavailable("the image test needs %s (apt-get install podman runc mmdebstrap)" % ", ".join(missing))
    if os.geteuid() != 0:
        _unavailable("the image test runs podman as root (rootful: UIDs in the image are the host's)")
    proc = subprocess.run(["bash", str(HERE / "build_image.sh")], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-6000:]
        if proc.returncode in (2, 3):  # a tool missing, or podman cannot run here at all
            _unavailable(err)
        raise AssertionError("building the image failed (exit %d):\n%s" % (proc.returncode, err))
    global_args, image = proc.stdout.decode().strip().splitlines()[-1].split("\t")
    env = dict(os.environ, CONTAINERS_CONF=str(HERE / ".cache" / "containers.conf"))
    yield SimpleNamespace(cmd=["podman", *global_args.split()], image=image, env=env)


def run_podman(p: SimpleNamespace, *args: str, timeout: float = 120.0, check: bool = True) -> str:
    proc = subprocess.run([*p.cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=p.env, timeout=timeout)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError("podman %s: exit %d\n%s" % (" ".join(args), proc.returncode, out))
    return out


def test_image_runs_the_compiled_server_as_65532(podman) -> None:
    config = json.loads(run_podman(podman, "image", "inspect", "--format", "{{json .Config}}", podman.image))
    assert config["User"] == "%d:%d" % (IMAGE_UID, IMAGE_UID)
    assert config["Entrypoint"] == ["/opt/kitex-fast/bin/kitex-fast", "component"]
    size = int(run_podman(podman, "image", "inspect", "--format", "{{.Size}}", podman.image).strip())
    print("image %s: %.1f MB" % (podman.image, size / 1e6))
    out = run_podman(podman, "run", "--rm", "--entrypoint", "/opt/kitex-fast/bin/python", podman.image, "-c",
                     "import os, kitex_fast.codec as c; from kitex_fast.dapr import h2server; "
                     "print(os.getuid(), os.getgid(), c.USING_EXTENSION, h2server.unavailable())")
    assert out.split() == [str(IMAGE_UID), str(IMAGE_UID), "True", "None"], out


def _wait_socket(path: str, container: str, podman: SimpleNamespace, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            pass
        finally:
            probe.close()
        state = run_podman(podman, "inspect", "--format", "{{.State.Status}}", container, check=False).strip()
        if state not in ("created", "running", "configured", "initialized"):
            raise AssertionError("the component container is %s:\n%s"
                                 % (state, run_podman(podman, "logs", container, check=False)))
        if time.monotonic() > deadline:
            raise AssertionError("no socket within %.0f s:\n%s"
                                 % (timeout, run_podman(podman, "logs", container, check=False)))
        time.sleep(0.1)


def test_daprd_as_65532_calls_kitex_through_the_image(podman) -> None:
    try:
        daprd_binary = stack.build_daprd()
        peers.build_peers()
    except (stack.DaprdUnavailable, peers.PeersUnavailable) as exc:
        _unavailable(str(exc))
    base = tempfile.mkdtemp(prefix="kf-image-")
    os.chmod(base, 0o755)  # (mkdtemp: 0700; daprd as 65532 reads the resources beside it)
    sockets = os.path.join(base, "sockets")
    resources = os.path.join(base, "resources")
    os.makedirs(resources)
    # The socket folder as a pod's fsGroup shares it: daprd's group, group-writable.
    os.mkdir(sockets)
    os.chown(sockets, 0, DAPR_UID)
    os.chmod(sockets, 0o770)
    # daprd as UID/GID 65532 with no other groups (setpriv keeps the environment stack.Daprd sets),
    # from a copy beside the test's files: the checkout's folders need not be open to that UID.
    daprd_copy = os.path.join(base, "daprd")
    shutil.copy2(daprd_binary, daprd_copy)
    os.chmod(daprd_copy, 0o755)
    as_dapr = os.path.join(base, "daprd-as-65532")
    with open(as_dapr, "w") as f:
        f.write("#!/bin/sh\nexec setpriv --reuid %d --regid %d --clear-groups env HOME=/tmp %s \"$@\"\n"
                % (DAPR_UID, DAPR_UID, daprd_copy))
    os.chmod(as_dapr, 0o755)

    container = "kitex-fast-test-%s" % uuid.uuid4().hex[:8]
    server = peers.KitexServer("default", "echo").start()
    daprd = None
    started: List[str] = []
    try:
        with open(os.path.join(resources, "kitex.yaml"), "w") as f:
            f.write(stack.component_yaml("kitex", {"hostPorts": server.address, "destService": "echo",
                                                   "methodName": "echo", "version": "v1"}))
        run_podman(podman, "run", "-d", "--name", container, "--network", "host",
                   "-v", "%s:%s" % (sockets, SOCKETS_IN_IMAGE), podman.image, "--log-level", "info")
        started.append(container)
        socket_file = os.path.join(sockets, "kitex.sock")
        _wait_socket(socket_file, container, podman)
        st = os.lstat(socket_file)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (IMAGE_UID, DAPR_UID, 0o660)
        log = run_podman(podman, "logs", container)
        assert "serving bindings.kitex on %s/kitex.sock" % SOCKETS_IN_IMAGE in log, log
        assert "implementation c, server compiled" in log, log

        daprd = stack.Daprd(as_dapr, resources, sockets).start()
        dlog = daprd.log()
        assert "pluggable component 'kitex' was successfully registered" in dlog, dlog[-4000:]
        with daprd.client() as sdk:
            for i in range(20):
                text = "hello image %d" % i
                response = sdk.invoke_binding("kitex", "get", data=echo_request(text))
                assert read_echo_reply(response.data) == text + ",hi Kitex"
        assert daprd.proc is not None and _uids_of(daprd.proc.pid) == [DAPR_UID] * 4  # (sh, setpriv, env: exec)
    finally:
        if daprd is not None:
            daprd.stop()
        for name in started:
            run_podman(podman, "stop", "-t", "15", name, check=False)
        exit_codes = [run_podman(podman, "inspect", "--format", "{{.State.ExitCode}}", n, check=False).strip()
                      for n in started]
        for name in started:
            run_podman(podman, "rm", "-f", name, check=False)
        server.stop()
        leftover = os.listdir(sockets)
        shutil.rmtree(base, ignore_errors=True)
    assert exit_codes == ["0"], exit_codes  # SIGTERM: drained and stopped cleanly
    assert leftover == []  # and the socket removed


def _uids_of(pid: int) -> List[int]:
    """Real, effective, saved and filesystem UIDs of ``pid`` (the process daprd runs in)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []
