"""Bad linux.resources input -> ConfigError naming the JSON path (before any write)."""
from __future__ import annotations

import pytest

from ocirun.errors import ConfigError

from .conftest import IS_V2, needs_root, needs_v1

pytestmark = needs_root

BAD = [
    ({"memory": {"limit": -5}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": "1G"}}, "linux.resources.memory.limit"),
    ({"memory": {"swappiness": 101}}, "linux.resources.memory.swappiness"),
    ({"memory": {"limit": 1 << 30, "swap": 1 << 20}}, "linux.resources.memory.swap"),
    ({"cpu": {"cpus": "0-"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "a"}}, "linux.resources.cpu.mems"),
    ({"cpu": {"cpus": "3-1"}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"quota": 5}}, "linux.resources.cpu.quota"),
    ({"pids": {"limit": -7}}, "linux.resources.pids.limit"),
    ({"devices": [{"allow": False, "type": "q"}]}, "linux.resources.devices[0].type"),
    ({"devices": [{"allow": True, "type": "c", "access": "xyz"}]}, "linux.resources.devices[0].access"),
    ({"devices": [{"allow": True, "type": "c", "access": 7}]}, "linux.resources.devices[0].access"),
    ({"devices": [{"type": "c"}]}, "linux.resources.devices[0].allow"),
    ({"blockIO": {"weight": 5}}, "linux.resources.blockIO.weight"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0]"),
    ({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}, "linux.resources.hugepageLimits[0].pageSize"),
    ({"unified": {"../x": "1"}} if IS_V2 else {"unified": {"memory.high": "1"}}, "linux.resources.unified"),
]


@pytest.mark.parametrize("res,path", BAD, ids=[p for _, p in BAD])
def test_bad_input(mgr, res, path):
    with pytest.raises(ConfigError) as e:
        mgr.apply(res)
    assert e.value.path.startswith(path), str(e.value)


@needs_v1
def test_unified_on_v1_is_not_supported(mgr):
    with pytest.raises(ConfigError) as e:
        mgr.apply({"unified": {"memory.high": "10M"}})
    assert e.value.path.startswith("linux.resources.unified")
    assert "not supported" in str(e.value) or "not available" in str(e.value)


def test_custom_json_path(mgr):
    with pytest.raises(ConfigError) as e:
        mgr.update({"memory": {"limit": -3}}, path="resources")
    assert e.value.path == "resources.memory.limit" and e.value.file == "config.json"


def test_device_access_letters_other_than_rwm_are_ignored_as_in_runc():
    """runc's update.bats denies "rwa"; runc passes it through unchecked."""
    from ocirun.cgroups.devices import parse_rules
    rules = parse_rules([{"allow": False, "type": "c", "major": 1, "minor": 11, "access": "rwa"},
                         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "mwr"}],
                        "linux.resources.devices")
    assert [r.access for r in rules] == ["rw", "rwm"]
