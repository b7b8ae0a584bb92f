"""flamectl commands: watch, logs, status, errors, login, output formats."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import yaml

from flame.cli.config import load_login


def test_watch_follows_the_job_to_completion_and_exits_0(cli) -> None:
    result = cli("job", "watch", "j-1", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "job j-1 completed" in result.stdout
    assert "models:/digits@best" in result.stdout
    assert "3/3" in result.output  # the progress bar reached the last round
    assert cli.api.gets == 4  # polled until the terminal state, no further
    # each poll asked for the points after those it had, not the whole history again
    asked = [
        int(r.url.params.get("after_seq", 0))
        for r in cli.api.requests
        if r.url.path == "/v1/jobs/j-1/metrics"
    ]
    *polls, final = asked  # then the whole list once, for the summary
    assert polls == sorted(polls) and polls[0] == 0 and polls[-1] > 0 and final == 0


def test_watch_exits_6_when_the_job_fails_and_says_why(cli) -> None:
    cli.api.states = ["running", "failed"]
    cli.api.reason = "trainer group default lost quorum"
    result = cli("job", "watch", "j-1", "--interval", "0.1")
    assert result.exit_code == 6  # ExitCode.JOB_FAILED, as `flamectl --help` documents
    assert "failed: trainer group default lost quorum" in result.stdout


def test_watch_json_output_is_machine_readable(cli) -> None:
    result = cli("job", "watch", "j-1", "--interval", "0.1", "-o", "json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["job"]["state"] == "completed"
    assert [m["step"] for m in body["metrics"]["metrics"]] == [1, 2, 3]


def test_logs_follow_prints_every_line_once_until_the_job_ends(cli) -> None:
    cli.api.log_lines = [f"line {i}" for i in range(7)]
    result = cli("logs", "j-1", "--follow", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    printed = [ln.split(": ", 1)[1] for ln in result.stdout.splitlines()]
    assert printed == cli.api.log_lines


def test_logs_without_follow_prints_what_is_there_and_returns(cli) -> None:
    cli.api.log_lines = list("abcdefg")
    result = cli("logs", "j-1")
    assert result.exit_code == 0
    # what the server holds so far (4 lines after one poll of the job), then it returns
    assert [ln.split(": ", 1)[1] for ln in result.stdout.splitlines()] == list("abcd")
    assert cli.api.gets == 1  # only resolving the job


def test_logs_of_a_service_with_filters_and_the_dropped_count(cli) -> None:
    result = cli("logs", "j-1", "--source", "controller", "--node", "n-1", "--level", "warning")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["--:--:-- - [controller] warning: job.started"]
    assert "(2 older lines of this job were dropped by retention)" in result.stderr
    (asked,) = [r for r in cli.api.requests if r.url.path == "/v1/jobs/j-1/logs"][:1]
    assert asked.url.params["source"] == "controller"
    assert asked.url.params["node_id"] == "n-1" and asked.url.params["level"] == "warning"
    bad = cli("logs", "j-1", "--source", "kernel")
    assert bad.exit_code == 2


def test_status_shows_state_transitions_and_tasks(cli) -> None:
    result = cli("job", "status", "j-1")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "transitions" in out and "tasks" in out
    assert "trainer" in out and "n-1" in out
    structured = yaml.safe_load(cli("job", "status", "j-1", "-o", "yaml").stdout)
    assert structured["tasks"][0]["role"] == "trainer"


def test_jobs_resolve_by_name(cli) -> None:
    result = cli("job", "get", "digits", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "j-1"


def test_job_get_shows_a_cross_site_matrix_and_statistics_from_the_metrics(cli) -> None:
    cells = {("global", "a"): 0.91, ("global", "b"): 0.88, ("a", "a"): 0.95, ("a", "b"): 0.7}
    cli.api.extra_metrics = [
        {"key": f"xsite/{m}/{s}/accuracy", "value": v, "step": 3, "at": None}
        for (m, s), v in cells.items()
    ] + [
        {"key": "xsite/a/a/loss", "value": 9.0, "step": 3, "at": None},
        {"key": "stats/pixel-0/mean", "value": 0.25, "step": 0, "at": None},
        {"key": "stats/pixel-0/q0.5", "value": 0.125, "step": 0, "at": None},
    ]
    result = cli("job", "get", "j-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("cross-site evaluation"))
    assert lines[head + 1].split() == ["MODEL", "A", "B"]
    assert lines[head + 2].split() == ["global", "0.91", "0.88"]
    assert lines[head + 3].split() == ["a", "0.95", "0.7"]
    stats = next(i for i, ln in enumerate(lines) if ln.startswith("federated statistics"))
    assert lines[stats + 1].split()[:3] == ["FEATURE", "COUNT", "MEAN"]
    assert "pixel-0" in lines[stats + 2] and "0.125" in lines[stats + 2]
    plain = json.loads(cli("job", "get", "j-1", "-o", "json").stdout)
    assert plain["id"] == "j-1"  # structured output stays the job itself


def test_api_errors_exit_with_their_documented_code_and_the_problem_detail(cli, tmp_path) -> None:
    missing = cli("job", "get", "j-404")
    assert missing.exit_code == 3  # not found
    assert "error: job 'j-404' not found (not_found, HTTP 404)" in missing.stderr
    schema = tmp_path / "design.json"
    schema.write_text(json.dumps({"roles": [], "channels": []}))
    bad = cli("design", "create", "empty", "--schema", str(schema))
    assert bad.exit_code == 1
    assert "invalid design: roles" in bad.stderr
    not_json = tmp_path / "nope.json"
    not_json.write_text("{")
    local = cli("design", "create", "x", "--schema", str(not_json))
    assert local.exit_code == 1 and "is not valid JSON" in local.stderr


def test_login_verifies_the_token_and_saves_it_private(cli) -> None:
    cli.config.unlink()
    result = cli("login", "--server", "http://flame.test/", "--token", "flm_user_test")
    assert result.exit_code == 0, result.output
    assert "u-1" in result.stdout
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert load_login(cli.config).server == "http://flame.test"
    wrong = cli("login", "--server", "http://flame.test", "--token", "flm_user_bad")
    assert wrong.exit_code == 4 and "unknown token" in wrong.stderr  # refused token
    assert load_login(cli.config).token == "flm_user_test"  # the good login was kept


def test_login_reads_the_token_from_a_file_or_stdin_not_only_argv(cli, tmp_path: Path) -> None:
    cli.config.unlink()
    argv = cli("login", "--server", "http://flame.test", "--token", "flm_user_test")
    assert "visible to every local user" in argv.stderr
    secret = tmp_path / "token"
    secret.write_text("flm_user_test\n")
    from_file = cli("login", "--server", "http://flame.test", "--token-file", str(secret))
    assert from_file.exit_code == 0 and "warning" not in from_file.stderr
    piped = cli("login", "--server", "http://flame.test", input="flm_user_test\n")
    assert piped.exit_code == 0, piped.output
    assert load_login(cli.config).token == "flm_user_test"
    empty = cli("login", "--server", "http://flame.test", input="\n")
    assert empty.exit_code == 2 and "no API token given" in empty.stderr


def test_not_logged_in_is_a_clear_error(cli) -> None:
    cli.config.unlink()
    result = cli("job", "list")
    assert result.exit_code == 4  # not logged in
    assert "not logged in" in result.stderr and "flamectl login" in result.stderr


def test_unreachable_server_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from flame.cli.config import Login, save_login
    from flame.cli.main import app

    config = tmp_path / "c.yaml"
    save_login(Login(server="http://127.0.0.1:1", token="t"), config)
    monkeypatch.setenv("FLAME_CONFIG", str(config))
    result = CliRunner().invoke(app, ["job", "list"])
    assert result.exit_code == 5  # network
    assert "cannot reach http://127.0.0.1:1" in result.stderr


def test_up_and_down_are_delegated_with_their_own_options(cli, tmp_path) -> None:
    helped = cli("up", "--help")
    assert helped.exit_code == 0 and "--nodes" in helped.stdout
    down = cli("down", "--home", str(tmp_path / "stack"))
    assert down.exit_code == 0, down.output
    assert "nothing was running" in down.stdout
    bad = cli("up", "--nodes", "-1", "--home", str(tmp_path / "stack"))
    assert bad.exit_code != 0  # option validation of the delegated command still applies


def test_run_local_needs_an_existing_folder(cli, tmp_path) -> None:
    result = cli("run", "--local", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_start_on_a_finished_job_says_so_exits_1_and_sends_nothing(cli) -> None:
    cli.api.states = ["completed"]
    result = cli("job", "start", "j-1")
    assert result.exit_code == 1
    assert "already ended (completed)" in result.stderr
    assert "flamectl job rerun digits" in result.stderr
    assert not [r for r in cli.api.requests if r.method == "POST"]


def test_rerun_makes_a_new_job_from_the_finished_one_and_starts_it(cli) -> None:
    cli.api.states = ["completed"]
    result = cli("job", "rerun", "digits")
    assert result.exit_code == 0, result.output
    [made] = cli.api.created
    assert made["name"] == "digits-2"  # the next free name
    assert (made["design_id"], made["code_version"], made["spec"]) == ("d-1", 1, {"rounds": 3})
    posts = [r.url.path for r in cli.api.requests if r.method == "POST"]
    assert posts == ["/v1/jobs", f"/v1/jobs/{made['id']}/start"]
    assert "digits-2" in result.stdout and "a new run of digits" in result.stdout


def test_rerun_refuses_a_job_that_has_not_ended(cli) -> None:
    cli.api.states = ["running"]
    result = cli("job", "rerun", "j-1")
    assert result.exit_code == 1 and "only a job that has ended" in result.stderr
    assert not cli.api.created


def test_run_names_count_up() -> None:
    from flame.cli.job import next_run_name

    assert next_run_name("demo", set()) == "demo-2"
    assert next_run_name("demo", {"demo-2", "demo-3"}) == "demo-4"
    assert next_run_name("demo-2", {"demo", "demo-2"}) == "demo-3"


def test_version_and_exit_codes_are_in_the_help(cli) -> None:
    from importlib.metadata import version

    shown = cli("--version")
    assert shown.exit_code == 0 and version("flame-sdk") in shown.stdout
    helped = cli("--help")
    assert "3 not found" in helped.stdout and "6 job failed" in helped.stdout


def test_logs_json_prints_one_object_per_line(cli) -> None:
    cli.api.log_lines = ["one", "two"]
    result = cli("logs", "j-1", "-o", "json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["task_id"], x["stream"], x["line"]) for x in lines] == [
        ("t-1", "stdout", "one"),
        ("t-1", "stdout", "two"),
    ]


def test_code_push_shows_the_bytes_and_sends_the_zip_whole(cli, tmp_path) -> None:
    import io
    import zipfile

    code = tmp_path / "code"
    (code / "trainer").mkdir(parents=True)
    (code / "trainer" / "main.py").write_text("from flame import Trainer\nclass T(Trainer): ...\n")
    (code / "trainer" / "weights.bin").write_bytes(os.urandom(200_000))  # does not compress
    result = cli("code", "push", "d-1", str(code))
    assert result.exit_code == 0, result.output
    [sent] = cli.api.pushed
    assert zipfile.ZipFile(io.BytesIO(sent)).namelist() == [
        "trainer/main.py",
        "trainer/weights.bin",
    ]
    assert f"2 files, {len(sent):,} bytes zipped" in result.stderr
    kb = f"{len(sent) / 1000:.1f}"
    assert "uploading" in result.stderr and f"{kb}/{kb} kB" in result.stderr  # all sent


def test_code_push_refuses_a_folder_that_does_not_fit_the_design(cli, tmp_path) -> None:
    code = tmp_path / "code"
    (code / "trainer").mkdir(parents=True)
    (code / "trainer" / "main.py").write_text("print('no role class here')\n")
    result = cli("code", "push", "d-1", str(code))
    assert result.exit_code == 1 and "exactly one class deriving from a Flame role" in result.stderr
    assert cli.api.pushed == []
