"""A real Spark standalone cluster on the loopback: a master and workers, each a process of its own, started
with pyspark's own launcher (``bin/spark-class``) as an operator would start them (``sbin/start-master.sh``
and ``start-worker.sh`` run the same classes as daemons).

Used by the Spark tests (a session fixture in ``tests/audit/test_spark.py``) and by ``bench/bench_audit.py``.
Executors run the driver's own interpreter (``PYSPARK_PYTHON``): on one machine they share its virtualenv,
the package and DuckDB included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# quiet daemons: warnings and errors only, to their log files
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


def spark_home() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyspark is not installed (pip install 'ketamine-cds[spark]')")
    return Path(next(iter(spec.submodule_search_locations)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_usage(root: int) -> tuple[int, float]:
    """The current RSS (KiB) and CPU seconds of every process below ``root`` (not ``root`` itself), read from
    /proc: the executors a worker starts, or the JVM a driver starts (which ``wait4`` does not see)."""
    children: dict[int, list[int]] = {}
    usage: dict[int, tuple[int, float]] = {}
    tick, page_kib = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        usage[int(entry.name)] = (int(fields[21]) * page_kib, cpu)
    rss, cpu, stack = 0, 0.0, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        rss, cpu = rss + usage.get(pid, (0, 0.0))[0], cpu + usage.get(pid, (0, 0.0))[1]
        stack.extend(children.get(pid, []))
    return rss, cpu


@dataclass
class Cluster:
    """A running standalone cluster: ``master`` is its URL (``spark://127.0.0.1:PORT``)."""

    root: Path
    workers: int
    cores: int = 1
    memory: str = "1g"
    master: str = ""
    ui: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        conf = self.root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "log4j2.properties").write_text(_LOG4J2)
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(conf),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "256m",  # the master's and workers' own heaps (executors get ``memory``)
            "PYSPARK_PYTHON": sys.executable,
        }

    def _launch(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopping it stops the executors it started
        )
        log.close()
        self.processes.append(process)

    def start(self, timeout: float = 240.0) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        port, ui = free_port(), free_port()
        self.master, self.ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}"
        self._launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        )
        for i in range(self.workers):
            work = self.root / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self._launch(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.master,
                "--host",
                "127.0.0.1",
                "--webui-port",
                str(free_port()),
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(work),
            )
        self.wait(timeout)
        return self

    def alive_workers(self) -> int:
        with urllib.request.urlopen(self.ui + "/json/", timeout=5) as answer:  # the master's status page
            status = json.loads(answer.read())
        return sum(1 for w in status.get("workers", []) if w.get("state") == "ALIVE")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a Spark daemon exited with {process.returncode}: {self.logs()}")
            try:
                if self.alive_workers() >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"the Spark cluster did not start in {timeout:.0f} s: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-2000:] for p in sorted(self.root.glob("*.log"))
        )

    def session_settings(self) -> Mapping[str, str]:
        """A driver's settings on this machine (``PYSPARK_SUBMIT_ARGS``): modest executors, one per worker."""
        return {
            "spark.executor.memory": self.memory,
            "spark.executor.cores": str(self.cores),
            "spark.driver.memory": "1g",
            "spark.pyspark.python": sys.executable,
        }

    def stop(self) -> None:
        """Stop the daemons started here (each with the executors it started), the workers first."""
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        self.processes.clear()


def submit_args(settings: Mapping[str, str]) -> str:
    """``PYSPARK_SUBMIT_ARGS`` for these settings (pyspark starts the driver's JVM with them)."""
    return " ".join(f"--conf {k}={v}" for k, v in settings.items()) + " pyspark-shell"
