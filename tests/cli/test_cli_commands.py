"""The CLI's commands against a real API: tables with whole ids, --json for scripts, categories, scenes,
trainings, and downloads that stream, skip, resume and verify."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from cli_helpers import KEY, cli, error_lines

from dreammask.shared import keys

SPEC = {"train_categories": ["person", "dog", "car", "building"], "num_novel": 1, "images_per_category": 2,
        "image_size": 96, "seed": 5, "name": "cli test"}


def _env(api):
    return {"DREAMMASK_API_URL": api.url, "DREAMMASK_API_KEY": KEY}


@pytest.fixture(scope="module")
def finished_job(live_api, tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "spec.json"
    spec.write_text(json.dumps(SPEC))
    r = cli("submit", str(spec), "--json", env=_env(live_api))
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    live_api.run_pending()
    final = live_api.client.get(f"/v1/jobs/{view['job_id']}").json()
    assert final["state"] == "succeeded", final
    return final


def test_tables_show_whole_ids_and_json_matches_the_api(live_api, finished_job):
    env = {**_env(live_api), "COLUMNS": "50"}  # a narrow terminal must not cut ids
    job_id = finished_job["job_id"]
    r = cli("list", env=env)
    assert r.returncode == 0, r.stderr
    assert job_id in r.stdout and "1 of 1" in r.stdout
    # Times in the one format of the CLI and the UI.
    wide = cli("list", env={**env, "COLUMNS": "200"}).stdout
    assert re.search(r"│ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC │", wide), wide
    r = cli("list", "--json", "--status", "succeeded", env=env)
    page = json.loads(r.stdout)
    assert [j["job_id"] for j in page["items"]] == [job_id] and page["total"] == 1
    r = cli("list", "--json", "--status", "failed", env=env)
    assert json.loads(r.stdout)["total"] == 0


def test_categories_and_scenes(live_api, finished_job):
    env = _env(live_api)
    job_id = finished_job["job_id"]
    api_cats = live_api.client.get(f"/v1/jobs/{job_id}/categories").json()
    r = cli("categories", job_id, env=env)
    assert r.returncode == 0, r.stderr
    for n in api_cats["novel"]:
        assert n["name"] in r.stdout and n["nearest_train"] in r.stdout
    assert json.loads(cli("categories", job_id, "--json", env=env).stdout) == api_cats

    r = cli("scenes", job_id, env=env)
    assert r.returncode == 0, r.stderr
    assert "s00000" in r.stdout and "s00001" in r.stdout and "2 of 2 scenes" in r.stdout
    scenes = json.loads(cli("scenes", job_id, "--json", "--limit", "1", env=env).stdout)
    assert scenes["total"] == 2 and [s["scene_id"] for s in scenes["items"]] == ["s00000"]


def test_unknown_ids_are_one_clean_error(live_api):
    env = _env(live_api)
    for args in (("watch", "job-nope"), ("categories", "job-nope"), ("scenes", "job-nope"),
                 ("trainings", "watch", "train-nope"), ("trainings", "cancel", "train-nope"),
                 ("download", "ds-nope")):
        r = cli(*args, env=env)
        lines = error_lines(r)
        assert r.returncode == 1 and 1 <= len(lines) <= 2, (args, r.stderr)
        assert lines[0].startswith("error: 404") and "nope" in lines[0], (args, lines)
        assert "association" not in r.stdout and "iterations" not in r.stdout  # no empty progress bars


def test_bad_spec_names_the_field_without_an_empty_location(live_api):
    r = cli("submit", "--categories", "dog,dog", env=_env(live_api))
    lines = error_lines(r)
    assert r.returncode == 1 and len(lines) == 2
    assert lines[0].startswith("error: 422") and "train_categories: item 1" in lines[0] and ": :" not in lines[0]
    assert "Value error" not in lines[0]


def test_a_misspelt_field_gets_a_suggestion(live_api, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("train_categories: [person, dog]\nnum_novl: 2\nthresholds: {min_scor: 0.5}\n")
    r = cli("submit", str(spec), env=_env(live_api))
    lines = error_lines(r)
    assert r.returncode == 1 and len(lines) == 2, r.stderr
    assert "num_novl" in lines[0] and "did you mean 'num_novel'?" in lines[0]
    assert "thresholds.min_scor" in lines[0] and "did you mean 'min_score'?" in lines[0]


def _summary(stdout: str) -> dict:
    m = re.search(r"(\d+) files in .*: (\d+) downloaded \((\d+) resumed\), (\d+) already there, (\d+) verified",
                  " ".join(stdout.split()))
    assert m, stdout
    return dict(zip(("files", "fetched", "resumed", "skipped", "verified"), map(int, m.groups())))


def test_download_streams_skips_resumes_and_verifies(live_api, finished_job, tmp_path):
    env = _env(live_api)
    ds_id = finished_job["dataset_id"]
    manifest = live_api.client.get(f"/v1/datasets/{ds_id}").json()["manifest"]
    checksums = manifest["checksums"]
    assert checksums and all(v.startswith("sha256:") for v in checksums.values())
    dest = tmp_path / "dl"

    r = cli("download", ds_id, "--to", str(dest), env={**env, "COLUMNS": "400"})
    s = _summary(r.stdout)
    assert s["fetched"] == s["files"] and s["skipped"] == 0 and s["verified"] == len(checksums)
    # The files without a checksum are named (the manifest cannot hold its own).
    unchecked = sorted(set(f["path"] for f in live_api.client.get(f"/v1/datasets/{ds_id}").json()["files"])
                       - set(checksums))
    assert unchecked == ["manifest.json"] and "without a checksum: manifest.json" in " ".join(r.stdout.split())
    root = dest / ds_id
    store = live_api.rt.store
    for rel in checksums:
        assert (root / rel).read_bytes() == store.get_bytes(keys.dataset_file(ds_id, rel)), rel

    # Run again: nothing is fetched.
    s = _summary(cli("download", ds_id, "--to", str(dest), env=env).stdout)
    assert s["fetched"] == 0 and s["skipped"] == s["files"]

    # A damaged local file is fetched again; an interrupted one resumes from its .part.
    card = root / keys.CARD_JSON
    card.write_text("damaged")
    sheet = root / "contact_sheet.png"
    whole = sheet.read_bytes()
    sheet.unlink()
    sheet.with_name(sheet.name + ".part").write_bytes(whole[: len(whole) // 2])
    s = _summary(cli("download", ds_id, "--to", str(dest), env=env).stdout)
    assert s["fetched"] == 2 and s["resumed"] == 1 and s["skipped"] == s["files"] - 2
    assert sheet.read_bytes() == whole and json.loads(card.read_text())["dataset_id"] == ds_id
    assert not sheet.with_name(sheet.name + ".part").exists()

    # Files whose bytes do not match the manifest are refused, named in two lines, and not left in place;
    # the other files still arrive.
    store.put_bytes(keys.dataset_file(ds_id, keys.CARD_JSON), b'{"tampered": true}')
    store.put_bytes(keys.dataset_file(ds_id, keys.CARD_MD), b"# tampered")
    card.unlink()
    (root / keys.CARD_MD).unlink()
    sheet.unlink()
    r = cli("download", ds_id, "--to", str(dest), "--no-progress", env={**env, "COLUMNS": "400"})
    lines = error_lines(r)
    assert r.returncode == 1 and len(lines) == 2, r.stderr
    assert "2 of" in lines[0] and "checksum" in lines[0] and keys.CARD_JSON in lines[0] and keys.CARD_MD in lines[0]
    assert not card.exists() and not card.with_name(card.name + ".part").exists()
    assert not (root / keys.CARD_MD).exists() and sheet.read_bytes() == whole


def test_a_reviewed_version_downloads_verified_against_its_checksums(live_api, finished_job, tmp_path):
    env, c = _env(live_api), live_api.client
    job_id, ds_id = finished_job["job_id"], finished_job["dataset_id"]
    scenes = c.get(f"/v1/jobs/{job_id}/scenes").json()["items"]
    target = next(s for s in scenes if s["instances"])
    r = c.post(f"/v1/jobs/{job_id}/reviews", json={"scene_id": target["scene_id"], "decision": "reject"})
    assert r.status_code == 201, r.text
    r = c.post(f"/v1/datasets/{ds_id}/versions", json={})
    assert r.status_code == 202, r.text
    live_api.run_pending()  # the publish task
    v2 = r.json()["dataset_id"]
    assert c.get(f"/v1/datasets/{ds_id}/versions").json()["items"][1]["state"] == "published"
    again = c.post(f"/v1/datasets/{ds_id}/versions", json={})  # nothing changed since: the same version
    assert again.status_code == 200 and again.json()["dataset_id"] == v2
    checksums = c.get(f"/v1/datasets/{v2}").json()["manifest"]["checksums"]
    assert checksums and all(v.startswith("sha256:") for v in checksums.values())

    s = _summary(cli("download", v2, "--to", str(tmp_path), env=env).stdout)
    assert s["fetched"] == s["files"] and s["verified"] == len(checksums)
    # A file of the version that does not match its manifest is refused.
    live_api.rt.store.put_bytes(keys.dataset_file(v2, keys.CARD_MD), b"tampered")
    (tmp_path / v2 / keys.CARD_MD).unlink()
    r = cli("download", v2, "--to", str(tmp_path), "--no-progress", env=env)
    assert r.returncode == 1 and "checksum" in error_lines(r)[0], r.stderr


def test_trainings_submit_list_cancel_and_validation(live_api, finished_job, tmp_path):
    env = _env(live_api)
    ds_id = finished_job["dataset_id"]
    r = cli("trainings", "submit", "--dataset", ds_id, "--iterations", "3", "--tiny", "--name", "t1", "--json",
            env=env)
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    tid = view["training_id"]
    assert view["state"] == "queued" and view["max_iter"] == 3
    # No real data: SRA stays off, said at once on stderr (stdout stays the JSON) and in the status.
    assert "warning: SRA is off" in " ".join(r.stderr.split()) and "--real-dataset" in r.stderr
    assert any(n.startswith("SRA is off") for n in view["notes"])
    r = cli("trainings", "show", tid, env={**env, "COLUMNS": "300"})
    assert r.returncode == 0 and "note: SRA is off" in r.stdout

    r = cli("trainings", "list", env={**env, "COLUMNS": "50"})
    assert r.returncode == 0 and tid in r.stdout
    assert [t["training_id"] for t in json.loads(cli("trainings", "list", "--json", env=env).stdout)["items"]] == [tid]

    r = cli("trainings", "cancel", tid, env=env)
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = cli("trainings", "watch", tid, env=env)  # a training that ended cancelled: non-zero for scripts
    assert r.returncode == 1 and "cancelled" in r.stdout

    r = cli("trainings", "submit", "--dataset", ds_id, "--iterations", "3", "--config", "huge.yaml", env=env)
    lines = error_lines(r)
    assert r.returncode == 1 and len(lines) == 2
    assert "config" in lines[0] and "huge.yaml" in lines[0] and "dreammask_convnext_large.yaml" in lines[0]

    r = cli("trainings", "submit", "--dataset", ds_id, "--iterations", "3", "--set", "SOLVER.BASE_LRR=1e-4",
            env={**env, "COLUMNS": "300"})
    assert r.returncode == 1 and "did you mean 'SOLVER.BASE_LR'?" in r.stderr, r.stderr

    r = cli("trainings", "submit", "--dataset", "ds-nope", "--iterations", "3", "--tiny", env=env)
    assert r.returncode == 1 and "datasets.0" in r.stderr and ds_id in r.stderr  # names what exists

    r = cli("trainings", "submit", "--dataset", ds_id, env=env)
    assert r.returncode == 1 and "--iterations" in r.stderr


def test_trainings_evaluate_prints_figures_and_a_seen_unseen_table(live_api, finished_job, tmp_path):
    """`dreammask trainings evaluate tr-<id> --dataset ...`: queued as a job of the training service (run here
    by the runner, as the worker would), waited for, printed as figures and a per-class table."""
    import os
    import subprocess
    import sys
    import time

    from dreammask.shared.celery_app import TASK_TRAIN
    from dreammask.trainer.service.runner import run_training_job
    from dreammask.trainer.service.settings import TrainerSettings

    env = _env(live_api)
    ds_id = finished_job["dataset_id"]
    settings = TrainerSettings(trainer_cache_dir=tmp_path / "cache")
    store = live_api.rt.store
    tid = live_api.client.post("/v1/trainings", json={"datasets": [ds_id], "iterations": 1, "tiny": True}).json()["training_id"]
    try:
        r = cli("trainings", "evaluate", tid, "--dataset", f"synthetic:{ds_id}", env=env)
        assert r.returncode == 1 and "weights" in r.stderr and "no checkpoint yet" in r.stderr
        assert run_training_job(store, tid, settings)["state"] == "succeeded"

        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMMASK_")}
        full_env.update({"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb", **env})
        proc = subprocess.Popen([sys.executable, "-m", "dreammask.services.cli", "trainings", "evaluate", tid,
                                 "--dataset", f"synthetic:{ds_id}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=full_env)
        deadline = time.monotonic() + 120
        evaluation_id = None
        while evaluation_id is None and time.monotonic() < deadline and proc.poll() is None:
            ids = [t["training_id"] for t in live_api.client.get("/v1/trainings").json()["items"] if t["kind"] == "evaluate"]
            evaluation_id = ids[0] if ids else None
            time.sleep(0.2)
        assert evaluation_id, proc.communicate(timeout=5)
        assert run_training_job(store, evaluation_id, settings)["state"] == "succeeded"
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "mIoU" in out and "PQ" in out and f"synthetic:{ds_id}" in out
        assert "class" in out and ("unseen" in out or "seen" in out)
    finally:
        d = live_api.rt.dispatcher
        kept = [m for m in d.pending if m[0] != TASK_TRAIN]
        d.pending.clear()
        d.pending.extend(kept)


def test_delete_asks_then_removes_one_job_and_nothing_else(live_api, finished_job, tmp_path):
    env = _env(live_api)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**SPEC, "seed": 11, "name": "to delete"}))
    victim = json.loads(cli("submit", str(spec), "--json", env=env).stdout)["job_id"]
    live_api.run_pending()
    store = live_api.rt.store
    assert any(True for _ in store.list(f"jobs/{victim}/"))

    # Without --yes it asks; answering no deletes nothing.
    r = subprocess.run([sys.executable, "-m", "dreammask.services.cli", "delete", victim], input="n\n",
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert r.returncode != 0 and "nothing deleted" in r.stderr
    assert any(True for _ in store.list(f"jobs/{victim}/"))

    r = cli("delete", victim, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert f"job {victim}: deleted" in r.stdout
    assert not any(True for _ in store.list(f"jobs/{victim}/"))
    assert not any(True for _ in store.list(f"datasets/ds-{victim}/"))
    assert live_api.client.get(f"/v1/jobs/{victim}").status_code == 404
    # The other job and its dataset are untouched.
    assert live_api.client.get(f"/v1/jobs/{finished_job['job_id']}").json()["state"] == "succeeded"
    assert store.exists(f"datasets/ds-{finished_job['job_id']}/manifest.json")

    r = cli("delete", "nonsense", "--yes", env=env)
    assert r.returncode != 0 and "is not a job" in error_lines(r)[0]
    r = cli("delete", victim, "--yes", env=env)  # gone: the API's 404, one clean line
    assert r.returncode != 0 and len(error_lines(r)) <= 2
