"""AppArmor / SELinux: early checks and the exec-label writes."""
from __future__ import annotations

import os

import pytest

from ocirun.errors import ConfigError, OciError
from ocirun.linux import lsm
from sec_util import run_child


@pytest.fixture
def no_lsm(monkeypatch):
    monkeypatch.setattr(lsm, "apparmor_enabled", lambda: False)
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: False)


@pytest.fixture
def both_lsms(monkeypatch):
    monkeypatch.setattr(lsm, "apparmor_enabled", lambda: True)
    monkeypatch.setattr(lsm, "selinux_enabled", lambda: True)


@pytest.mark.parametrize("proc, linux, msg", [
    ({"apparmorProfile": "docker-default"}, {},
     'config.json: process.apparmorProfile: AppArmor profile "docker-default" '
     "requested but AppArmor is not enabled on this host"),
    ({"selinuxLabel": "system_u:system_r:container_t:s0"}, {},
     'config.json: process.selinuxLabel: SELinux label "system_u:system_r:container_t:s0" '
     "requested but SELinux is not enabled on this host"),
    ({}, {"mountLabel": "system_u:object_r:container_file_t:s0"},
     'config.json: linux.mountLabel: SELinux mount label "system_u:object_r:container_file_t:s0" '
     "requested but SELinux is not enabled on this host"),
])
def test_check_refuses_labels_without_the_lsm(no_lsm, proc, linux, msg):
    with pytest.raises(ConfigError) as ei:
        lsm.check(proc, linux)
    assert str(ei.value) == msg


def test_check_accepts_nothing_and_unconfined(no_lsm):
    lsm.check(None, None)
    lsm.check({"apparmorProfile": "", "selinuxLabel": ""}, {"mountLabel": ""})
    lsm.check({"apparmorProfile": "unconfined"}, {})


def test_check_accepts_labels_with_the_lsm(both_lsms):
    lsm.check({"apparmorProfile": "p", "selinuxLabel": "l"}, {"mountLabel": "m"})


def test_check_type_error(no_lsm):
    with pytest.raises(ConfigError) as ei:
        lsm.check({"apparmorProfile": 3}, {})
    assert ei.value.path == "process.apparmorProfile"


def test_host_detection_matches_this_kernel():
    # This VM's kernel has neither LSM active; the detection must agree.
    aa = os.path.exists("/sys/module/apparmor/parameters/enabled")
    assert lsm.apparmor_enabled() == (aa and open(
        "/sys/module/apparmor/parameters/enabled").read(1) == "Y")
    assert lsm.selinux_enabled() == os.path.exists("/sys/fs/selinux/enforce")


def _fake_proc(tmp_path, apparmor_dir: bool):
    attr = tmp_path / "thread-self" / "attr"
    (attr / "apparmor").mkdir(parents=True) if apparmor_dir else attr.mkdir(parents=True)
    (attr / "exec").write_text("")
    if apparmor_dir:
        (attr / "apparmor" / "exec").write_text("")
    return attr


def test_apply_writes_apparmor_exec(tmp_path, both_lsms):
    attr = _fake_proc(tmp_path, apparmor_dir=True)
    lsm.apply_exec_label({"apparmorProfile": "myprof"}, proc=str(tmp_path))
    assert (attr / "apparmor" / "exec").read_text() == "exec myprof"
    assert (attr / "exec").read_text() == ""


def test_apply_apparmor_falls_back_to_attr_exec(tmp_path, both_lsms):
    attr = _fake_proc(tmp_path, apparmor_dir=False)
    lsm.apply_exec_label({"apparmorProfile": "old"}, proc=str(tmp_path))
    assert (attr / "exec").read_text() == "exec old"


def test_apply_writes_selinux_exec(tmp_path, both_lsms):
    attr = _fake_proc(tmp_path, apparmor_dir=True)
    lsm.apply_exec_label({"selinuxLabel": "u:r:t:s0"}, proc=str(tmp_path))
    assert (attr / "exec").read_text() == "u:r:t:s0"


def test_apply_nothing_requested_touches_nothing(tmp_path):
    lsm.apply_exec_label({}, proc=str(tmp_path / "absent"))
    lsm.apply_exec_label(None)


def test_apply_on_real_proc_without_lsm_is_a_clear_error():
    """No LSM takes the write here: the kernel says EINVAL; one line, no traceback."""
    def child():
        try:
            lsm.apply_exec_label({"selinuxLabel": "u:r:t:s0"})
        except OciError as e:
            return str(e)
    msg = run_child(child).ok()
    assert msg.startswith('selinux: setting exec label "u:r:t:s0"')


def test_mount_data():
    assert lsm.mount_data(None, None) is None
    assert lsm.mount_data("mode=755", None) == "mode=755"
    assert lsm.mount_data("mode=755", "s:o:t:s0") == 'mode=755,context="s:o:t:s0"'
    assert lsm.mount_data("", "s:o:t:s0") == 'context="s:o:t:s0"'
