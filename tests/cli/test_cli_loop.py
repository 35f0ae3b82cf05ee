"""`dreammask loop`: submit from a spec file, then show, watch, list and cancel a loop the test runs to its end
in process (the API's messages go to the in-process dispatcher of tests/cli/conftest.py)."""

from __future__ import annotations

import json

from cli_helpers import KEY, cli, error_lines

from dreammask.services.cli.inprocess import run_loop

SPEC = {"name": "cli loop", "train_categories": ["sky", "grass", "cat", "table"], "target": ["kite", "awning"],
        "rounds": 2, "images_per_round": 3, "real_datasets": ["toy_world_train"], "eval_dataset": "toy_world_val",
        "job": {"image_size": 64}, "training": {"iterations": 1, "tiny": True, "overrides": {
            "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA": 0.0, "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA": 0.0,
            "SOLVER.IMS_PER_BATCH": 2}}}


def test_submit_show_watch_list_cancel(live_api, tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMMASK_TRAINER_CACHE_DIR", str(tmp_path / "trainer-cache"))
    monkeypatch.setenv("DREAMMASK_TOY_WORLD_DIR", str(tmp_path / "toy-world"))
    env = {"DREAMMASK_API_URL": live_api.url, "DREAMMASK_API_KEY": KEY, "COLUMNS": "200"}
    spec = tmp_path / "loop.yaml"
    spec.write_text(json.dumps(SPEC))
    r = cli("loop", "submit", str(spec), "--rounds", "1", "--json", env=env)
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)
    assert view["rounds"] == 1 and view["state"] == "queued"
    loop_id = view["loop_id"]
    assert run_loop(live_api.rt, loop_id).state.value == "succeeded"

    r = cli("loop", "show", loop_id, env=env)
    assert r.returncode == 0, r.stderr
    api_view = live_api.client.get(f"/v1/loops/{loop_id}").json()
    r1 = api_view["history"][1]
    assert f"loop {loop_id}: succeeded, round 1/1" in r.stdout
    assert ", ".join(f"{k} {n}" for k, n in r1["allocation"].items()) in r.stdout
    assert r1["training_id"] in r.stdout and "round 0" in r.stdout and "round 1" in r.stdout
    for c in ("kite", "awning", "lamp", "sky"):  # every class of the evaluation set, round by round
        assert any(line.strip().startswith(f"│ {c} ") for line in r.stdout.splitlines()), r.stdout
    assert json.loads(cli("loop", "show", loop_id, "--json", env=env).stdout) == api_view

    r = cli("loop", "watch", loop_id, env=env)
    assert r.returncode == 0 and "all 1 rounds done" in r.stdout and r1["job_id"] in r.stdout, r.stdout
    r = cli("loop", "list", env=env)
    assert loop_id in r.stdout and "1/1" in r.stdout
    r = cli("loop", "cancel", loop_id, env=env)
    assert r.returncode == 1 and "409" in error_lines(r)[0] and "already succeeded" in error_lines(r)[0]
    r = cli("loop", "submit", str(spec), "--images-per-round", "1", env=env)
    assert r.returncode == 1 and "422" in r.stderr and "at least one image" in r.stderr
