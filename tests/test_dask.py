"""The Dask executor on real clusters: a LocalCluster of worker processes, and a separately
started ``dask scheduler`` with ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import (
    PUBLISH_WORKER,
    WORKER_PID,
    free_port,
    nborch,
    run_json,
    write_notebook,
    write_pipeline,
)
from dask_cluster import DaskProcesses
from test_outputs import clobbering_pipeline, flaky_pipeline

from nborch import Pipeline, Store

distributed = pytest.importorskip("distributed")



@pytest.fixture(scope="module")
def local_cluster():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_max_parallel_defaults_to_the_clusters_worker_threads(local_cluster):
    """Two one-thread workers: two attempts at once by default, not this machine's CPUs (a
    third would wait in Dask's queue while it counts against the limit)."""
    from nborch.execution.executors.dask import DaskExecutor
    executor = DaskExecutor(local_cluster)
    try:
        assert executor.parallelism() == 2
    finally:
        executor.shutdown()
    assert local_cluster.status == "running"  # the caller's client is left alone


def test_executor_dask_starts_one_local_cluster_per_process(workdir: Path):
    """`--executor dask` without an address: the runs of one process (a scheduler's, a
    notebook's) share one LocalCluster, started by the first (seconds saved per run), and
    its workers end with the process."""
    write_notebook(workdir / "where.ipynb", PUBLISH_WORKER)
    script = ("import json, os, sys\nfrom nborch import Pipeline\n"
              "p = Pipeline('twice', root=sys.argv[1])\np.notebook('where.ipynb')\n"
              "pids = [p.run(executor='dask', home=sys.argv[1] + '/.nborch', max_parallel=1)"
              ".values['where']['worker_pid'] for _ in range(2)]\n"
              "print(json.dumps({'pids': pids, 'alive': [os.path.exists(f'/proc/{pid}') "
              "for pid in pids]}))")
    out = subprocess.run([sys.executable, "-c", script, str(workdir)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["alive"] == [True, True]  # the first run's worker still served the second
    deadline = time.monotonic() + 60
    while any(psutil.pid_exists(pid) for pid in seen["pids"]):
        assert time.monotonic() < deadline, "the LocalCluster's workers outlived the process"
        time.sleep(0.2)


def worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def test_diamond_runs_on_the_workers_and_values_flow(workdir: Path, local_cluster):
    write_notebook(workdir / "root.ipynb", PUBLISH_WORKER + "\nnborch.publish('n', 20)")
    write_notebook(workdir / "left.ipynb", "import nborch\nnborch.publish('n', "
                   "upstream['root']['values']['n'] + 1)", parameters="upstream = {}")
    write_notebook(workdir / "right.ipynb", "import nborch\nnborch.publish('n', "
                   "upstream['root']['values']['n'] * 2)", parameters="upstream = {}")
    write_notebook(workdir / "join.ipynb", "import nborch\nnborch.publish('total', "
                   "upstream['left']['values']['n'] + upstream['right']['values']['n'])\n"
                   "print('joined')", parameters="upstream = {}")
    p = Pipeline("diamond", root=workdir)
    root = p.notebook("root.ipynb")
    left, right = p.notebook("left.ipynb", upstream=[root]), p.notebook("right.ipynb",
                                                                        upstream=[root])
    p.notebook("join.ipynb", upstream=[left, right])
    seen = []
    handle = p.start(executor=local_cluster, home=workdir / ".nborch",
                     output_dir=workdir / "shared",  # not the store's folder
                     listeners=[lambda e: seen.append(type(e).__name__)])
    run = handle.wait(180)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.values["join"]["total"] == 61
    assert run.values["root"]["worker_pid"] in worker_pids(local_cluster).values()
    # Progress and output came back from the workers as events, and the log has the output.
    assert {"AttemptProgress", "AttemptOutput", "KernelStarted"} <= set(seen)
    assert "joined" in Store(workdir / ".nborch").log_path(run.run_id, "join").read_text()
    assert Path(run.tasks["join"].output_path) == workdir / "shared" / run.run_id / "join.ipynb"
    assert Path(run.tasks["join"].output_path).is_file()
    assert not list((workdir / ".nborch").rglob("*.ipynb"))
    # The caller's client is left open for its owner; the run's events are not kept.
    assert local_cluster.status == "running"
    assert not [topic for topic in local_cluster.get_events() if topic.startswith("nborch-")]


def test_cancel_stops_the_kernel_on_the_worker(workdir: Path, local_cluster):
    pids = workdir / "pids"
    write_notebook(workdir / "slow.ipynb",
                   f"import os, time\nopen({str(pids)!r}, 'w').write(str(os.getpid()))\n"
                   "time.sleep(300)")
    p = Pipeline("cancelme", root=workdir)
    p.notebook("slow.ipynb")
    handle = p.start(executor=local_cluster, home=workdir / ".nborch")
    deadline = time.monotonic() + 120
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    kernel = int(pids.read_text())
    handle.cancel()
    run = handle.wait(120)
    assert run.status == "cancelled" and run.tasks["slow"].status == "cancelled"
    deadline = time.monotonic() + 30
    while psutil.pid_exists(kernel) and psutil.Process(kernel).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the kernel on the worker is still running"
        time.sleep(0.1)


# -- a scheduler and workers started as their own processes ------------------------------------

@pytest.fixture
def dask_processes(tmp_path):
    cluster = DaskProcesses(tmp_path)
    yield cluster
    cluster.stop()


def test_resources_pin_a_task_and_the_cli_uses_an_existing_scheduler(workdir: Path,
                                                                      dask_processes):
    dask_processes.worker()
    dask_processes.worker("--resources", "GPU=1")
    gpu_worker = next(address for address, info in
                      dask_processes.client.scheduler_info()["workers"].items()
                      if info.get("resources", {}).get("GPU"))
    gpu_pid = dask_processes.client.run(os.getpid, workers=[gpu_worker])[gpu_worker]
    for name in "abc":
        write_notebook(workdir / f"{name}.ipynb", PUBLISH_WORKER)
    path = write_pipeline(workdir, {"name": "pinned", "tasks": {
        "a": {"notebook": "a.ipynb", "resources": {"GPU": 1}},
        "b": {"notebook": "b.ipynb", "resources": {"GPU": 1}},
        "c": {"notebook": "c.ipynb", "upstream": ["a", "b"], "resources": {"GPU": 1}}}})
    proc = nborch("run", str(path), "--executor", f"dask://{dask_processes.address}", "--json",
                  cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert {run["tasks"][t]["values"]["worker_pid"] for t in "abc"} == {gpu_pid}
    bad = nborch("validate", str(write_pipeline(workdir, {"name": "bad", "tasks": {
        "a": {"notebook": "a.ipynb", "resources": {"GPU": "one"}}}}, "bad.yaml")), cwd=workdir)
    assert bad.returncode == 2 and "resources must map resource names to positive numbers" \
        in bad.stderr


def test_a_worker_killed_mid_task_is_survived(workdir: Path, dask_processes):
    dask_processes.worker()
    dask_processes.worker()
    marks = workdir / "marks"
    marks.mkdir()
    # Each execution leaves its worker's pid; the first one then waits to be killed.
    write_notebook(workdir / "victim.ipynb",
                   WORKER_PID + f"import os, time\nmarks = {str(marks)!r}\n"
                   "first = not os.listdir(marks)\n"
                   "tmp = marks + '.tmp'\nopen(tmp, 'w').write(f'{os.getpid()} {os.getppid()}')\n"
                   "os.replace(tmp, os.path.join(marks, str(worker.pid)))\n"
                   "if first:\n    time.sleep(300)\n"
                   "import nborch\nnborch.publish('done_on', worker.pid)")
    write_notebook(workdir / "after.ipynb", "pass")
    p = Pipeline("survivor", root=workdir, retries=1, retry_delay="1s")
    victim = p.notebook("victim.ipynb")
    p.notebook("after.ipynb", upstream=[victim])
    handle = p.start(executor=f"dask://{dask_processes.address}", home=workdir / ".nborch")
    deadline = time.monotonic() + 120
    while not os.listdir(marks):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.1)
    doomed = int(os.listdir(marks)[0])
    # the kernel the dead worker forked, and its kernel template
    orphan, template = map(int, (marks / str(doomed)).read_text().split())
    assert template != doomed and psutil.Process(template).ppid() == doomed
    os.kill(doomed, signal.SIGKILL)  # the worker process, with the template and kernel under it
    run = handle.wait(240)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.values["victim"]["done_on"] != doomed
    assert len(os.listdir(marks)) == 2  # ran again, elsewhere, once
    # The template reads its stdin, a pipe from the worker: the killed worker closed it; a
    # kernel notices its parent is gone and exits.
    for pid, what in ((template, "kernel template"), (orphan, "kernel")):
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"the dead worker's {what} is still running"
            time.sleep(0.2)


def test_an_unreachable_scheduler_is_a_clear_error(workdir: Path):
    write_notebook(workdir / "a.ipynb", "pass")
    path = write_pipeline(workdir, {"name": "nowhere", "tasks": {"a": {"notebook": "a.ipynb"}}})
    proc = nborch("run", str(path), "--executor", f"dask://127.0.0.1:{free_port()}",
                  cwd=workdir, timeout=120)
    assert proc.returncode == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in proc.stderr
    assert Store(workdir / ".nborch").list_runs() == []


def test_a_lost_scheduler_fails_the_run_clearly_and_resume_completes_it(workdir: Path,
                                                                         tmp_path_factory):
    first = DaskProcesses(tmp_path_factory.mktemp("first-cluster"))
    try:
        first.worker()
        gate = workdir / "gate"
        write_notebook(workdir / "quick.ipynb", "import nborch\nnborch.publish('ok', 1)")
        write_notebook(workdir / "slow.ipynb", f"import os, time\nwhile not os.path.exists("
                       f"{str(gate)!r}):\n    time.sleep(0.1)")
        path = write_pipeline(workdir, {"name": "fragile", "tasks": {
            "quick": {"notebook": "quick.ipynb"},
            "slow": {"notebook": "slow.ipynb", "upstream": ["quick"]}}})
        p = Pipeline.from_yaml(path)
        handle = p.start(executor=f"dask://{first.address}", home=workdir / ".nborch")
        store = Store(workdir / ".nborch")
        deadline = time.monotonic() + 120
        while store.get_run(handle.run_id).tasks["slow"].status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(first.procs[0].pid, signal.SIGKILL)  # the scheduler
        run = handle.wait(240)
    finally:
        first.stop()
    assert run.status == "failed"
    assert run.tasks["quick"].status == "success"
    assert run.tasks["slow"].error["type"] == "DaskSchedulerLost"
    assert "lost the connection to the Dask scheduler" in run.tasks["slow"].error["message"]
    second = DaskProcesses(tmp_path_factory.mktemp("second-cluster"))
    try:
        second.worker()
        gate.touch()
        resumed = nborch("resume", run.run_id, "--executor", f"dask://{second.address}",
                         "--json", cwd=workdir)
    finally:
        second.stop()
    assert resumed.returncode == 0, resumed.stderr
    done = run_json(resumed)
    assert done["status"] == "success" and done["tasks"]["quick"]["attempts"] == 1


def test_secrets_reach_the_kernel_on_the_worker_and_are_written_nowhere(workdir: Path,
                                                                         dask_processes):
    dask_processes.worker()
    value = "dask-s3cr3t-v4lue"
    (workdir / ".env").write_text(f"TOKEN={value}\n")
    write_notebook(workdir / "use.ipynb", "import nborch\ntoken = nborch.secret('TOKEN')\n"
                   "print('token', token)\nnborch.publish('length', len(token))")
    path = write_pipeline(workdir, {"name": "sec", "secrets": ["TOKEN"],
                                    "tasks": {"use": {"notebook": "use.ipynb"}}})
    proc = nborch("run", str(path), "--executor", f"dask://{dask_processes.address}", "--json",
                  cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert run["tasks"]["use"]["values"] == {"length": len(value)}  # the kernel had the value
    assert "token ***" in Path(run["tasks"]["use"]["output_path"]).read_text()
    assert value not in proc.stdout + proc.stderr
    for folder in (workdir, dask_processes.folder):  # the store, outputs, the worker's folder
        for file in folder.rglob("*"):
            if file.is_file() and file.name != ".env":
                assert value.encode() not in file.read_bytes(), file


def _error_on_a_worker_with(shadow: Path, dask_processes, workdir: Path, spec: dict,
                            *wrap: str) -> dict:
    """The error of the one task of ``spec`` run on a worker whose ``nborch`` is the one in
    ``shadow`` (first on its path; ``wrap``: more of the worker's command before it)."""
    path = f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    dask_processes.worker(wrap=("env", f"PYTHONPATH={path}", *wrap))
    proc = nborch("run", str(write_pipeline(workdir, spec)), "--executor",
                  f"dask://{dask_processes.address}", "--json", cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    [task] = run_json(proc)["tasks"].values()
    return task["error"]


def test_a_worker_without_nborch_fails_the_attempt_clearly_and_logs_no_secret(workdir: Path,
                                                                             dask_processes):
    """A worker whose environment cannot import nborch: the attempt fails at once saying
    so (Dask would fail to read the task, log it whole, secrets included, and hold it
    forever); the worker's log holds no secret, and the worker stays up."""
    shadow = workdir / "shadow"
    (shadow / "nborch").mkdir(parents=True)
    (shadow / "nborch" / "__init__.py").write_text("raise ImportError('no nborch here')\n")
    log = workdir / "worker.log"
    value = "dask-s3cr3t-w0rker"
    (workdir / ".env").write_text(f"TOKEN={value}\n")
    error = _error_on_a_worker_with(shadow, dask_processes, workdir, {
        "name": "sec", "secrets": ["TOKEN"], "tasks": {
            "say": {"command": ["sh", "-c", "echo $TOKEN"]}}},
        "sh", "-c", f'exec "$0" "$@" 2>>{log}')
    assert error["type"] == "NborchUnavailable"
    assert "cannot import nborch (ImportError: no nborch here)" in error["message"]
    assert "Failed to deserialize" not in log.read_text()
    assert value not in log.read_text()
    assert len(dask_processes.client.scheduler_info()["workers"]) == 1  # still up


def test_a_worker_with_another_nborch_version_fails_the_attempt_naming_both(workdir: Path,
                                                                           dask_processes):
    """A worker whose nborch is another version than the orchestrator's (the attempt's
    bytes are this version's classes): the attempt fails at once naming the worker, its
    version and the one to install, and nothing runs there."""
    from nborch.core.version import __version__
    source = Path(importlib.util.find_spec("nborch").origin).parent
    shadow = workdir / "shadow"
    for path in source.rglob("*.py"):  # this nborch, but for its version
        target = shadow / "nborch" / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.relative_to(source) == Path("core/version.py"):
            target.write_text('__version__ = "0.0.1"\n')
        else:
            target.symlink_to(path)
    error = _error_on_a_worker_with(shadow, dask_processes, workdir, {
        "name": "versions", "tasks": {"touch": {"command": ["touch", str(workdir / "ran")]}}})
    assert error["type"] == "NborchUnavailable"
    assert "has nborch 0.0.1" in error["message"]
    assert f"install nborch {__version__}" in error["message"]
    assert not (workdir / "ran").exists()


def test_a_retry_writes_to_a_memory_output_dir_on_the_workers(workdir: Path, local_cluster):
    """Nothing is renamed: a ``memory://`` location is each worker's own, and object stores
    cannot rename; the failed attempt's notebook is written where it is kept."""
    p = flaky_pipeline(workdir)
    url = "memory://nborch-dask/daily"
    run = p.start(executor=local_cluster, home=workdir / ".nborch", output_dir=url).wait(180)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.tasks["flaky"].attempts == 2
    base = f"{url}/{run.run_id}"
    assert run.tasks["flaky"].output_path == f"{base}/flaky.ipynb"
    assert run.values["after"]["seen"] == f"{base}/flaky.ipynb"

    def written(folder=f"/nborch-dask/daily/{run.run_id}"):
        import fsspec
        fs = fsspec.filesystem("memory")
        return [Path(f).name for f in fs.ls(folder, detail=False)] if fs.exists(folder) else []

    names = sorted(n for names in local_cluster.run(written).values() for n in names)
    assert names == ["after.ipynb", "flaky.attempt-1.ipynb", "flaky.ipynb"]


def test_a_notebook_a_worker_cannot_write_fails_its_attempt(workdir: Path, local_cluster):
    out = workdir / "out"
    run = Pipeline.from_yaml(clobbering_pipeline(workdir, out)).start(
        executor=local_cluster, home=workdir / ".nborch", output_dir=out).wait(180)
    assert run.tasks["clobber"].error["type"] == "OutputWriteError"
    assert "IsADirectoryError" in run.tasks["clobber"].error["message"]
    stored = Store(workdir / ".nborch").get_run(run.run_id)
    assert stored.status == "failed"
    assert {n: t.status for n, t in stored.tasks.items()} == {
        "clobber": "failed", "other": "success", "after": "upstream_failed"}


def certificates(folder: Path) -> dict:
    """A certificate authority and one certificate it signed for 127.0.0.1 (server and
    client), made by the ``openssl`` command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    files = {name: str(folder / f"{name}.pem") for name in ("ca", "ca_key", "cert", "key")}
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                    "extendedKeyUsage=serverAuth,clientAuth\n")
    for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=nborch test CA", "-keyout", files["ca_key"], "-out", files["ca"]],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", files["key"], "-out", str(folder / "cert.csr")],
            ["x509", "-req", "-in", str(folder / "cert.csr"), "-CA", files["ca"], "-CAkey",
             files["ca_key"], "-CAcreateserial", "-days", "1", "-extfile",
             str(folder / "ext.cnf"), "-out", files["cert"]]):
        subprocess.run(["openssl", *command], check=True, capture_output=True)
    return files


def test_a_pipeline_runs_on_a_tls_cluster(workdir: Path, tmp_path_factory):
    """Secrets cross the network encrypted: a scheduler and a worker that speak TLS only,
    with certificates made here; nborch gets them from Dask's configuration."""
    tls = certificates(tmp_path_factory.mktemp("certificates"))
    cluster = DaskProcesses(tmp_path_factory.mktemp("tls-cluster"), tls=tls)
    try:
        cluster.worker()
        [worker] = cluster.client.run(os.getpid).values()
        write_notebook(workdir / "a.ipynb", PUBLISH_WORKER)
        write_notebook(workdir / "b.ipynb", "import nborch\nnborch.publish('twice', "
                       "upstream['a']['values']['worker_pid'] * 2)", parameters="upstream = {}")
        target = f"dask://{cluster.address}"
        assert target.startswith("dask://tls://127.0.0.1:")
        path = write_pipeline(workdir, {"name": "encrypted", "executor": target, "tasks": {
            "a": {"notebook": "a.ipynb"}, "b": {"notebook": "b.ipynb", "upstream": ["a"]}}})
        unconfigured = nborch("run", str(path), cwd=workdir, timeout=120)  # the file's executor
        assert unconfigured.returncode == 1 and "Traceback" not in unconfigured.stderr
        assert f"cannot connect to the Dask scheduler at {cluster.address}" in \
            unconfigured.stderr and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in unconfigured.stderr
        proc = nborch("run", str(path), "--executor", target, "--json", cwd=workdir, env={
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": tls["ca"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": tls["cert"],
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": tls["key"],
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true"})
        # In Python, a client made with Dask's Security object (as docs/dask.md shows)
        assert cluster.client.security.require_encryption
        secured = Pipeline.load(str(path)).start(executor=cluster.client,
                                                 home=workdir / ".nborch").wait(180)
    finally:
        cluster.stop()
    assert proc.returncode == 0, proc.stderr
    run = run_json(proc)
    assert run["tasks"]["a"]["values"]["worker_pid"] == worker
    assert run["tasks"]["b"]["values"]["twice"] == 2 * worker
    assert secured.status == "success", {n: t.error for n, t in secured.tasks.items()}
    assert secured.values["b"]["twice"] == 2 * worker


def test_a_command_task_runs_on_a_worker(workdir: Path, local_cluster):
    """A command task on the cluster: its output, values and product come back."""
    p = Pipeline("cmd_dask", root=workdir)
    made = p.command([sys.executable, "-c", "import os, pathlib, sys, nborch\n"
                      "pathlib.Path(sys.argv[1]).write_text('x')\n"
                      "print('on the worker')\n"
                      "nborch.publish('parent', os.getppid())", "{{ product }}"],
                     name="make", product="out/x.txt")
    write_notebook(workdir / "use.ipynb", "import nborch\n"
                   "nborch.publish('x', open(upstream['make']['product']).read())",
                   parameters="upstream = {}")
    p.notebook("use.ipynb", upstream=[made])
    run = p.start(executor=local_cluster, home=workdir / ".nborch").wait(180)
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert run.values["make"]["parent"] in worker_pids(local_cluster).values()
    assert run.values["use"]["x"] == "x"
    assert "on the worker" in Store(workdir / ".nborch").log_path(run.run_id, "make").read_text()


def test_a_resource_no_worker_offers_fails_the_task_at_once(workdir: Path, local_cluster):
    """A typo or a GPU worker that is down: Dask would hold the task forever."""
    write_notebook(workdir / "train.ipynb", "pass")
    write_notebook(workdir / "cpu.ipynb", "pass")
    p = Pipeline("gpu", root=workdir)
    p.notebook("train.ipynb", resources={"GPU": 1})
    p.notebook("cpu.ipynb")
    run = p.start(executor=local_cluster, home=workdir / ".nborch").wait(120)
    train = run.tasks["train"]
    assert (train.status, run.tasks["cpu"].status) == ("failed", "success")
    assert train.error["type"] == "ResourceUnavailable"
    assert "offers GPU=1" in train.error["message"] and "no resources" in train.error["message"]
