"""Several hosts: two machines (network namespaces) each run the Procfile's web, worker and
relay against one PostgreSQL and one Redis on a third (this machine, across a bridge).
A few thousand webhooks are spread over both webs; mid-stream host A is cut off by a
network partition while its worker runs (host B takes its runs over; when the cable is
back, A's late outcome is fenced out), then host B is killed outright (A takes B's runs
over). Afterwards every run finished exactly once and every effect happened exactly once.

The senders play Ittybit behind a load balancer: a delivery that fails on one host (no
answer, 5xx) is sent again to the other, so some arrive twice and are `duplicate`s.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from integration.procs import PostgresServer, run_cli
from integration.stack import REPO, open_engine, pipeline_env
from sqlalchemy import Engine, func, insert, select, text

from pipeline.dev.procfile import procfile_command
from pipeline.dev.procs import Proc, http_answers, stop_all, wait_for, worker_ready
from pipeline.dev.servers import start_redis
from pipeline.models import ListenerRun, Media, WebhookEvent
from pipeline.signing import SIGNATURE_HEADER, sign

from .netns import Host, Network, Unavailable
from .probe import Probe, install

pytestmark = [pytest.mark.integration, pytest.mark.soak]

WEBHOOKS = int(os.environ.get("HOSTS_WEBHOOKS", 3000))
LISTENERS = ("update_media_record", "probe")  # those that want a failed job's delivery
WEB_PORT = 8000  # each host has its own ports
PARTITION_AT, KILL_AT = WEBHOOKS // 3, 2 * WEBHOOKS // 3
CHUNK, SENDERS, WINDOW = 100, 8, 1000
SLEEP = 4.0  # a sleeper's first attempt: long enough for the fault to land mid-run
TIMINGS = {
    # A lease short enough that the test waits seconds for a takeover; the shipped 10 s
    # works the same (test_worker_lost.py), only slower.
    "RUN_LEASE_SECONDS": "6",
    "RELAY_INTERVAL": "0.5",
    "REDELIVER_AFTER": "10",
    "TASK_TIME_LIMIT": "120",  # a worker cut off waits on TCP, not on its task limit
}


@dataclass
class Machine:
    """One host's Procfile processes."""

    host: Host
    env: dict[str, str]
    logs: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{WEB_PORT}/webhooks/ittybit"

    def start(self) -> None:
        argvs = {
            "web": procfile_command("web", self.env),
            "worker": procfile_command("worker", self.env, "-n", f"{self.host.name}@%h"),
            "relay": procfile_command("relay", self.env),
        }
        for name, argv in argvs.items():
            label = f"{self.host.name}-{name}"
            self.procs[name] = Proc(label, self.host.command(argv), self.env, self.logs, REPO)
        wait_for(
            http_answers(f"http://{self.host.address}:{WEB_PORT}/healthz"),
            timeout=30,
            what=f"{self.host.name}'s web",
            proc=self.procs["web"],
        )
        wait_for(
            worker_ready(self.procs["worker"]),
            timeout=60,
            what=f"{self.host.name}'s worker",
            proc=self.procs["worker"],
        )

    def worker_pids(self) -> set[int]:
        return set(self.procs["worker"].tree())

    def kill(self) -> None:
        """The host dies at once: every process SIGKILLed, nothing shut down."""
        for proc in self.procs.values():
            proc.kill()

    def stop(self) -> None:
        stop_all(list(self.procs.values()))


@dataclass
class Cluster:
    network: Network
    db: Engine
    secret: str
    machines: dict[str, Machine]
    probe: Probe


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("hosts")
    try:
        network = Network(["a", "b"])
    except Unavailable as exc:
        pytest.skip(f"network namespaces are unavailable here ({exc})")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(network.close)
        postgres = PostgresServer(root, network=f"{network.gateway}/{network.subnet.prefixlen}")
        cleanup.callback(postgres.close)
        redis, _ = start_redis(root, also_on=[network.gateway])
        cleanup.callback(redis.stop)
        install(root)
        secret = f"whsec_it_{secrets.token_hex(8)}"
        common = {
            "celery_broker_url": f"redis://{network.gateway}:{_port(redis)}/0",
            "ittybit_webhook_secret": secret,
            "live_token_secret": secrets.token_hex(16),
            "ittybit_api_key": "key_it_hosts",
            "ittybit_api_url": f"http://{network.gateway}:9",  # these listeners never call it
            "pythonpath": f"{root}:{REPO}",
            "worker_concurrency": "2",
            "web_concurrency": "2",
            **TIMINGS,
        }
        database = f"{postgres.url}/postgres"
        upgraded = run_cli(["db", "upgrade"], pipeline_env(database_url=database, **common), root)
        assert upgraded.returncode == 0, upgraded.stderr
        db = open_engine(database)
        cleanup.callback(db.dispose)
        probe = Probe(root, db)
        probe.create_table()
        machines = {}
        for name, host in network.hosts.items():
            env = pipeline_env(
                database_url=database.replace("127.0.0.1", network.gateway),
                public_url=f"http://{host.address}:{WEB_PORT}",
                pipeline_var_dir=str(root / f"var-{name}"),
                port=str(WEB_PORT),  # gunicorn.conf.py: $PORT on every interface of the host
                **common,
            )
            machines[name] = Machine(host, env, root)
            cleanup.callback(machines[name].stop)
            machines[name].start()
        yield Cluster(network, db, secret, machines, probe)


def _port(redis: Proc) -> int:
    return int(redis.argv[redis.argv.index("--port") + 1])


def run_states(db: Engine) -> Counter[str]:
    query = select(ListenerRun.state, func.count()).group_by(ListenerRun.state)
    with db.connect() as conn:
        return Counter(dict(conn.execute(query).all()))


class Senders:
    """Ittybit behind a load balancer: deliveries alternate over the hosts; one that gets
    no answer or a 5xx goes to the next host, until one answers 200."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.urls = [m.url for m in cluster.machines.values()]
        self.local = threading.local()
        self.answered: Counter[str] = Counter()  # by host URL
        self.failed_over = 0
        self.sent = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()  # the test failed: send no more

    def deliver(self, numbered: tuple[int, bytes]) -> int:
        index, body = numbered
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self.cluster.secret),
        }
        for attempt in range(60):
            url = self.urls[(index + attempt) % len(self.urls)]
            try:
                answer = self.local.session.post(url, data=body, headers=headers, timeout=(1, 5))
            except requests.RequestException:
                answer = None
            if answer is not None and answer.status_code == 200:
                with self.lock:
                    self.answered[url] += 1
                    self.failed_over += attempt > 0
                return 200
            if answer is not None and answer.status_code < 500:
                return answer.status_code
            self.local.session = requests.Session()
            time.sleep(0.2)
        return 0

    def send(self, bodies: list[bytes]) -> Counter[int]:
        """All of `bodies`, CHUNK at a time, keeping under WINDOW runs unfinished."""
        statuses: Counter[int] = Counter()
        with ThreadPoolExecutor(SENDERS) as pool:
            for offset in range(0, len(bodies), CHUNK):
                if self.stopped.is_set():
                    break
                chunk = list(enumerate(bodies[offset : offset + CHUNK], offset))
                statuses.update(pool.map(self.deliver, chunk))
                self.sent = offset + len(chunk)
                wait_for(lambda: unfinished(self.cluster.db) < WINDOW, timeout=120, what="backlog")
        return statuses


def unfinished(db: Engine) -> int:
    states = run_states(db)
    return sum(n for s, n in states.items() if s in ("pending", "running", "retrying"))


def sleeper_on(cluster: Cluster, senders: Senders, name: str, tag: str) -> str:
    """Send sleepers until one starts on host `name`'s worker; its task id."""
    pids = cluster.machines[name].worker_pids()
    for n in range(20):
        task_id = f"task_side_{tag}_{n}"
        add_media(cluster.db, [task_id])
        body = Probe.delivery(task_id, status="failed", sleep=SLEEP)
        assert senders.deliver((n, body)) == 200
        start = cluster.probe.wait_started(task_id, timeout=60)
        if start.pid in pids:
            return task_id
    raise AssertionError(f"no sleeper started on host {name} in 20 tries")


def add_media(db: Engine, task_ids: list[str]) -> None:
    rows = [
        {"task_id": t, "kind": "video", "input_url": "https://clippable.test/s.mov"}
        for t in task_ids
    ]
    with db.begin() as conn:
        conn.execute(insert(Media), rows)


def the_faults(cluster: Cluster, senders: Senders) -> tuple[str, float, str, set[int]]:
    """Partition host A mid-run and heal it, then kill host B mid-run; the sleeper cut
    off, how long the partition lasted, the sleeper killed and host B's worker pids."""
    network, a, b = cluster.network, cluster.machines["a"], cluster.machines["b"]
    # Host A cut off while its worker runs a sleeper: B takes the run over once the
    # lease runs out; the cable back, A's late commit is refused.
    wait_for(lambda: senders.sent >= PARTITION_AT, timeout=300, what="a third sent")
    cut_off = sleeper_on(cluster, senders, "a", "cut")
    a_log = a.procs["worker"].log_size()
    network.partition("a")
    partitioned = time.monotonic()
    print(f"hosts: A cut off with {unfinished(cluster.db)} runs unfinished")
    # Deliveries aimed at A meanwhile get no answer and go to B, as behind a balancer.
    aimed_at_a = [f"task_side_during_{n}" for n in range(10)]
    add_media(cluster.db, aimed_at_a)
    bodies = [(0, Probe.delivery(t, status="failed")) for t in aimed_at_a]
    failed_over = senders.failed_over
    with ThreadPoolExecutor(len(bodies)) as pool:
        assert list(pool.map(senders.deliver, bodies)) == [200] * len(bodies)
    assert senders.failed_over - failed_over >= len(bodies)
    taken = cluster.probe.wait_started(cut_off, attempt=2, timeout=60)
    assert taken.pid in b.worker_pids()
    print(f"hosts: B took A's run over {time.monotonic() - partitioned:.1f}s after the cut")
    wait_for(lambda: _succeeded(cluster.db, cut_off), timeout=60, what="B finishes A's run")
    partition_lasted = time.monotonic() - partitioned
    network.heal("a")
    # A's attempt ends: its outcome refused (success "...; its effects discarded", or the
    # retry it tried to record when the listener's statement failed meanwhile), or, when
    # the database stayed out of reach past its connect timeout, its error logged and
    # nothing recorded. A statement sent during the partition waits for TCP's next
    # retransmission, which backs off: it may come as long after the heal as the
    # partition lasted.
    about = f"run {taken.run_id} (probe"
    endings = ("nothing to do, the run was taken over", "database error (")
    wait_for(
        lambda: any(
            about in line and any(e in line for e in endings)
            for line in a.procs["worker"].log(a_log).splitlines()
        ),
        timeout=90 + 2 * partition_lasted,
        what="A's late outcome refused",
    )

    # Host B killed outright with a sleeper in flight: A takes over.
    wait_for(lambda: senders.sent >= KILL_AT, timeout=300, what="two thirds sent")
    killed_mid_run = sleeper_on(cluster, senders, "b", "kill")
    b_pids = b.worker_pids()
    b.kill()
    killed = time.monotonic()
    print(f"hosts: B killed with {unfinished(cluster.db)} runs unfinished")
    taken = cluster.probe.wait_started(killed_mid_run, attempt=2, timeout=60)
    print(f"hosts: A took B's run over {time.monotonic() - killed:.1f}s after the kill")
    assert taken.pid in a.worker_pids()
    return cut_off, partition_lasted, killed_mid_run, b_pids


def test_two_hosts_through_a_partition_and_a_host_killed_finish_every_run_exactly_once(
    cluster: Cluster,
) -> None:
    task_ids = [f"task_hosts_{n:05d}" for n in range(WEBHOOKS)]
    add_media(cluster.db, task_ids)
    bodies = [Probe.delivery(t, status="failed") for t in task_ids]
    senders = Senders(cluster)
    started = time.monotonic()
    with ThreadPoolExecutor(1) as background:
        sending = background.submit(senders.send, bodies)
        try:
            cut_off, partition_lasted, killed_mid_run, b_pids = the_faults(cluster, senders)
            statuses = sending.result(timeout=600)
        except BaseException:
            senders.stopped.set()  # no use sending the rest
            raise

    expected_runs = (WEBHOOKS + _sides(cluster)) * len(LISTENERS)
    wait_for(
        lambda: run_states(cluster.db) == {"succeeded": expected_runs},
        timeout=180,
        what="every run ends",
    )
    took = time.monotonic() - started

    assert statuses == {200: WEBHOOKS}
    all_tasks = task_ids + _side_ids(cluster)
    with cluster.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(WebhookEvent)) == len(all_tasks)
        by_status = select(Media.status, func.count()).group_by(Media.status)
        assert dict(conn.execute(by_status).all()) == {"failed": len(all_tasks)}
        per_run = conn.execute(
            text(
                "SELECT count(*) FROM listener_runs GROUP BY event_id, listener HAVING count(*) > 1"
            )
        ).all()
    assert per_run == []
    effects = cluster.probe.effect_counts()
    assert set(effects) == set(all_tasks)
    assert set(effects.values()) == {1}, [t for t, n in effects.items() if n != 1][:10]
    for sleeper in (cut_off, killed_mid_run):
        starts = cluster.probe.starts(sleeper)
        assert [s.attempt for s in starts] == [1, 2]
        assert cluster.probe.effects(sleeper)[0][1] == 2  # the taker's, not the first's
    assert cluster.probe.starts(killed_mid_run)[0].pid in b_pids
    print(
        f"hosts: {WEBHOOKS} webhooks, every run done in {took:.0f}s; answered by "
        f"{dict(senders.answered)}, {senders.failed_over} failed over to the other host; "
        f"A partitioned {partition_lasted:.1f}s"
    )


def _succeeded(db: Engine, task_id: str) -> bool:
    query = (
        select(func.count())
        .select_from(ListenerRun)
        .join(WebhookEvent)
        .where(WebhookEvent.task_id == task_id, ListenerRun.state == "succeeded")
    )
    with db.connect() as conn:
        return conn.scalar(query) == len(LISTENERS)


def _side_ids(cluster: Cluster) -> list[str]:
    query = select(Media.task_id).where(Media.task_id.startswith("task_side_"))
    with cluster.db.connect() as conn:
        return list(conn.scalars(query))


def _sides(cluster: Cluster) -> int:
    return len(_side_ids(cluster))
