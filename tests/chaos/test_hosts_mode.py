"""The campaign's --hosts glue without services: host crashes never take the last host,
crashed hosts boot again after their downtime, kills and the stuck-program check look at
every live host. (The campaign itself runs in tests/chaos/test_campaign.py.)"""
from __future__ import annotations

import random

from shardline.ops import gearman_admin
from tests.chaos import verdict
from tests.chaos.campaign import Campaign, Config


class FakeFleet:
    def __init__(self, programs):
        self.programs = programs

    def status(self):
        return self.programs


class FakeHosts:
    def __init__(self, fleets):
        self.fleets, self.down, self.calls = fleets, set(), []

    def live(self):
        return {h: f for h, f in self.fleets.items() if h not in self.down}

    def crash(self, host):
        self.down.add(host)
        self.calls.append(("crash", host))

    def revive(self, host):
        self.down.discard(host)
        self.calls.append(("revive", host))


def campaign(tmp_path, fleets) -> Campaign:
    c = Campaign(Config(hosts=len(fleets), dir=tmp_path), say=lambda _: None)
    c.hosts = FakeHosts(fleets)
    c.rng = random.Random(1)
    return c


def test_host_crash_spares_the_last_live_host_and_revives_after_downtime(tmp_path):
    c = campaign(tmp_path, {"host1": FakeFleet({}), "host2": FakeFleet({})})
    assert c._crash_host(down_s=0.0)
    assert len(c.hosts.down) == 1 and c.kills["host"] == 1
    assert c._crash_host(down_s=0.0)  # only one host left: nothing happens
    assert c.kills["host"] == 1 and len(c.hosts.live()) == 1
    c._revive()
    assert c.hosts.down == set() and [k for k, _ in c.hosts.calls] == ["crash", "revive"]
    c._crash_host(down_s=3600)
    c._revive()
    assert len(c.hosts.down) == 1, "revived before its downtime was over"
    c._revive(everything=True)
    assert c.hosts.down == set()


def test_kills_and_stuck_programs_span_the_live_hosts(tmp_path, monkeypatch):
    fleets = {"host1": FakeFleet({"consumer-s1": ("RUNNING", 4242), "agent": ("RUNNING", 1)}),
              "host2": FakeFleet({"consumer-s2": ("STOPPED", None), "loader": ("FATAL", None)})}
    c = campaign(tmp_path, fleets)
    killed = []
    monkeypatch.setattr("os.kill", lambda pid, sig: killed.append(pid))
    assert c._kill("consumer") and killed == [4242]  # the only RUNNING consumer
    # quiet() with the control store, Kinesis and gearmand answering "nothing left"
    from shardline.controlstore.memory import MemoryStore

    c.store = MemoryStore()
    c.query = lambda sql, args=None: [(0,)] if "count" in sql else []
    c.kinesis, c.stream = None, "s"
    c.info = type("Info", (), {"gearman_server": "127.0.0.1:1"})()
    monkeypatch.setattr(verdict, "lagging_shards", lambda *a: [])
    monkeypatch.setattr(gearman_admin, "cluster_status", lambda servers: {})
    v = verdict.Verdict(1)
    assert not c.quiet(v)
    assert v.stuck_programs == ["host2/consumer-s2", "host2/loader"]
    c.hosts.crash("host2")
    assert list(c.fleets()) == ["host1"]
    v = verdict.Verdict(1)
    assert c.quiet(v) and v.stuck_programs == []
