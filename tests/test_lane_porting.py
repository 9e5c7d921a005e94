"""Porting CryoSPARC cluster lanes (import, export), linting lanes for run-time failures,
managing lanes' files (add, remove, dump), and cache paths with shell-style defaults."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryohpc.api import Api
from cryohpc.envpath import expand_path_variables
from cryohpc.errors import ConfigError, UserError
from cryohpc.lanes.cluster import ClusterLane, sample_request
from cryohpc.lanes.cryosparc_pair import import_pair
from cryohpc.lanes.cryosparc_script import PROVIDED, to_cryohpc, to_cryosparc
from cryohpc.lanes.lint import lint
from cryohpc.lanes.render import TEMPLATE_DIR
from cryohpc.lanes.siteconfig import load_site_config
from cryohpc.lanes.trial import parse_shape
from cryohpc.model import Resources

CRYOSPARC_DEFAULTS = {"send_cmd_tpl": "{{ command }}", "qinfo_cmd_tpl": "sinfo"}

INFO = {
    "name": "hpc gpu", "title": "HPC GPU", "worker_bin_path": "/opt/cryosparc_worker/bin/cryosparcw",
    "cache_path": "${SLURM_TMPDIR:-/tmp}/cs_cache", "cache_reserve_mb": 10000, "send_cmd_tpl": "{{ command }}",
    "qsub_cmd_tpl": "sbatch {{ script_path_abs }}", "qstat_cmd_tpl": "squeue -j {{ cluster_job_id }}",
    "qdel_cmd_tpl": "scancel {{ cluster_job_id }}", "qinfo_cmd_tpl": "sinfo",
    "transfer_cmd_tpl": "scp {{ src_path }} login:{{ dest_path }}",
}
SCRIPT = """#!/usr/bin/env bash
## {{ cryosparc_username }} - cryosparc username of the user that created the job
#SBATCH --job-name cryosparc_{{ project_uid }}_{{ job_uid }}
#SBATCH -n {{ num_cpu }}
#SBATCH --gres=gpu:{{ num_gpu }}
#SBATCH --partition={{ partition }}
#SBATCH --time={{ hours }}:00:00
#SBATCH --mem={{ (ram_gb*1000)|int }}M
#SBATCH --comment={{ cryosparc_username }}
#SBATCH --output={{ job_log_path_abs }}

{{ run_cmd }}
"""


def write_pair(folder, info=None, script=SCRIPT):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster_info.json").write_text(json.dumps(info or INFO, indent=4))
    (folder / "cluster_script.sh").write_text(script)
    return folder


@pytest.fixture
def api(tmp_path):
    return Api.init(tmp_path / "home", tmp_path / "projects")


def lane_of(api, name):
    lane = api.lane(name)
    assert isinstance(lane, ClusterLane)
    return lane


def rendered(lane, shape, custom=None):
    req = sample_request(Path("/p/J1"), Path("/p"), shape, "i1", {**lane.sample_custom(), **(custom or {})})
    return lane.render_script(lane.variables(req))


# -- import -------------------------------------------------------------------------------------
def test_imported_lane_loads_runs_mpi_ranks_as_tasks_and_carries_every_change_with_its_reason(api, tmp_path):
    ported, checked = api.import_cryosparc(write_pair(tmp_path / "cs"), values={"partition": "gpu", "hours": "4"})
    assert checked.warnings == []  # every run-time problem of the pair was mended
    cfg = ported.config
    assert cfg["name"] == "hpc-gpu" and cfg["kind"] == "slurm" and cfg["submit_cmd"] == "sbatch --parsable {{ script_path_abs }}"
    assert "status_cmd" not in cfg and cfg["worker"] == {"cache_path": "${SLURM_TMPDIR:-/tmp}/cs_cache",
                                                         "cache_reserve_mb": 10000}
    assert {v["name"]: (v["type"], v.get("default")) for v in cfg["custom_vars"]} == {
        "hours": ("int", "4"), "partition": ("str", "gpu")}
    whys = " ".join(ch.why for ch in ported.script_changes)
    assert "tag" in whys and "num_mpi_ranks" in whys and "exit code" in whys and "job_creator" in whys
    assert any("qstat_cmd_tpl" in ch for ch in ported.changes)
    api.install_ported(ported)
    lane = lane_of(api, "hpc-gpu")
    script = rendered(lane, Resources(cpus=8, gpus=2, ram_gb=16, mpi_ranks=2), {"partition": "gpu", "hours": 4})
    assert "#SBATCH --ntasks=2\n#SBATCH --cpus-per-task=4\n" in script
    assert re.search(r"^#SBATCH --job-name=cryohpc_i1_P0_J0$", script, re.M)
    assert "cryosparc_username" not in lane.template_file() and "echo \"$cryohpc_rc\" > /p/J1/exit_code" in script


def test_cryosparcw_run_line_becomes_run_cmd_and_its_own_flags_are_dropped():
    converted = to_cryohpc('#SBATCH -n 4\n{{ worker_bin_path }} run {{ run_args }} --ssd "$TMPDIR" > {{ job_log_path_abs }} 2>&1\n',
                           "slurm")
    lines = converted.template.split("\n")
    run = next(li for li in lines if "run_cmd" in li)
    assert run.startswith("{{ run_cmd }} > {{ job_log_path_abs }} 2>&1{#") and "--ssd" in run.split("{#")[1]
    assert "cryosparcw run" in " ".join(ch.why for ch in converted.changes) or "dropped" in " ".join(
        ch.why for ch in converted.changes)


def test_pbs_and_sge_scripts_are_named_and_sentinelled_and_their_mpi_slots_left_to_the_admin():
    for kind, directive in (("pbs", "#PBS -l nodes=1:ppn={{ num_cpu }}"), ("sge", "#$ -pe smp {{ num_cpu }}")):
        converted = to_cryohpc(f"#!/bin/bash\n{directive}\n{{{{ run_cmd }}}}\n", kind)
        assert "{{ job_name }}" in converted.template and "exit_code_path" in converted.template
        assert any("MPI jobs need num_mpi_ranks" in w for w in converted.warnings)


@pytest.mark.parametrize("broken, message", [
    (("{not json", SCRIPT), "cluster_info.json:1: not valid JSON"),
    (("[1, 2]", SCRIPT), "expected a JSON object"),
    ((json.dumps(INFO), "#!/bin/bash\n#SBATCH -n 1\n# {{ run_cmd }}\necho hi\n"), "never runs the job"),
    ((json.dumps(INFO), "#SBATCH -n {{ num_cpu }\n{{ run_cmd }}\n"), "template syntax error"),
    ((b"\xff\xfe", SCRIPT), "not UTF-8"),
])
def test_a_broken_pair_is_one_clear_error_and_writes_nothing(api, tmp_path, broken, message):
    folder = tmp_path / "cs"
    folder.mkdir()
    info, script = broken
    (folder / "cluster_info.json").write_bytes(info if isinstance(info, bytes) else info.encode())
    (folder / "cluster_script.sh").write_text(script)
    with pytest.raises(ConfigError, match=re.escape(message)):
        api.import_cryosparc(folder)
    out = cli(api.instance.home, "lane", "import-cryosparc", str(folder), "--yes")
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in api.instance.paths.site_configs.iterdir() if not p.name.startswith(".")) == []


def test_values_for_variables_the_script_does_not_use_are_refused(api, tmp_path):
    with pytest.raises(ConfigError, match="partitoin.*the script uses no such variable"):
        api.import_cryosparc(write_pair(tmp_path / "cs"), values={"partitoin": "gpu"})


def test_import_cli_shows_the_changes_asks_and_refuses_without_yes_off_a_terminal(api, tmp_path):
    folder = write_pair(tmp_path / "cs")
    dry = cli(api.instance.home, "lane", "import-cryosparc", str(folder), "--dry-run", check=True).stdout
    assert "- #SBATCH -n {{ num_cpu }}" in dry and "+ #SBATCH --ntasks={{ num_mpi_ranks }}" in dry
    assert "partition: str (guessed), required" in dry and "nothing written" in dry
    refused = cli(api.instance.home, "lane", "import-cryosparc", str(folder))
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert not (api.instance.paths.site_configs / "hpc-gpu.yaml").exists()
    cli(api.instance.home, "lane", "import-cryosparc", str(folder), "--yes", "--value", "partition=gpu",
        "--type", "hours=int", "--value", "hours=2", check=True)
    again = cli(api.instance.home, "lane", "import-cryosparc", str(folder), "--yes")
    assert again.returncode != 0 and "exists" in again.stderr


# -- round trip -----------------------------------------------------------------------------------
DIRECTIVES = st.sampled_from([
    "#SBATCH --partition={{ partition }}", "#SBATCH -n {{ num_cpu }}", "#SBATCH --ntasks={{ num_gpu*4 }}",
    "#SBATCH --cpus-per-task={{ num_cpu }}", "#SBATCH --ntasks-per-node={{ num_cpu }}", "#SBATCH --gres=gpu:{{ num_gpu }}",
    "#SBATCH --mem={{ (ram_gb*1000)|int }}MB", "#SBATCH --job-name=cs_{{ project_uid }}_{{ job_uid }}",
    "#SBATCH -J {{ job_uid }}", "#SBATCH --comment=\"{{ cryosparc_username }}\"", "#SBATCH --account={{ account }}",
    "#SBATCH --time={{ hours }}:00:00", "#SBATCH --output={{ job_log_path_abs }}",
])
BODY = st.sampled_from([
    "", "module load cuda", "## {{ cryosparc_username }} - username", "# a note with #} in it", "echo \\\\ done",
    "export CUDA_VISIBLE_DEVICES=$available_devs",
    "{{ worker_bin_path }} run {{ run_args }} --ssd /x > {{ job_log_path_abs }} 2>&1", "{{ run_cmd }}",
    "srun {{ run_cmd }}", "EXIT_CODE=$?",
])
OPTIONAL = {"title": st.text("abc XYZ-", min_size=1, max_size=12), "desc": st.text("abc ", min_size=1, max_size=12),
            "cache_quota_mb": st.integers(1, 10**6), "transfer_cmd_tpl": st.just("scp {{ src_path }} x:{{ dest_path }}")}


@st.composite
def pairs(draw):
    run = ["{{ run_cmd }}"]
    if draw(st.booleans()):  # CryoSPARC sites branch on the job's needs
        run = ["{%- if num_gpu == 0 %}", "echo 'no GPU requested' >&2", "exit 1", "{%- else %}", *run, "{%- endif %}"]
    lines = ["#!/usr/bin/env bash", *draw(st.lists(DIRECTIVES, max_size=6)), *draw(st.lists(BODY, max_size=6)),
             *run, *draw(st.lists(BODY, max_size=2))]
    info = {"name": draw(st.sampled_from(["slurm", "hpc gpu", "a.b_c"])), "worker_bin_path": "/w/bin/cryosparcw",
            "send_cmd_tpl": draw(st.sampled_from(["{{ command }}", "ssh login {{ command }}"])),
            "qsub_cmd_tpl": draw(st.sampled_from(["sbatch {{ script_path_abs }}", "sbatch --parsable {{ script_path_abs }}"])),
            "qstat_cmd_tpl": "squeue -j {{ cluster_job_id }}", "qdel_cmd_tpl": "scancel {{ cluster_job_id }}",
            "qinfo_cmd_tpl": draw(st.sampled_from(["sinfo", "sinfo -p gpu"]))}
    if draw(st.booleans()):
        info["cache_path"] = draw(st.sampled_from(["/scratch/cs", "${SLURM_TMPDIR:-/tmp}/cs", "$TMPDIR/cs"]))
        info["cache_reserve_mb"] = draw(st.integers(0, 50000))
    for key, strategy in OPTIONAL.items():
        if draw(st.booleans()):
            info[key] = draw(strategy)
    return info, "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs())
def test_export_gives_back_the_pair_that_was_imported(api, tmp_path, pair):
    """import-cryosparc then export-cryosparc is CryoSPARC's pair again (script byte for
    byte; info key for key, CryoSPARC's defaults filled in), whatever the script holds."""
    info, script = pair
    folder = write_pair(tmp_path / "cs", info, script)
    ported, _ = api.import_cryosparc(folder, values={v: "1" for v in ("partition", "account", "hours")
                                                     if "{{ " + v in script})
    api.install_ported(ported, replace=True)
    out = tmp_path / "back"
    _, _, warnings = api.export_cryosparc(ported.config["name"], out, replace=True)
    assert (out / "cluster_script.sh").read_text() == script
    back = json.loads((out / "cluster_info.json").read_text())
    expected = {**CRYOSPARC_DEFAULTS, **info}
    if "cache_path" not in info:
        back.pop("cache_reserve_mb", None)
    assert back == expected
    assert warnings == []
    (api.instance.paths.site_configs / f"{ported.config['name']}.yaml").unlink()


def test_export_warns_about_what_cryosparc_cannot_render(api, tmp_path):
    (api.instance.paths.site_configs / "s.yaml").write_text(
        "lanes:\n  - {name: s, type: cluster, kind: slurm, script_template: slurm.sh.j2}\n")
    info_path, _, warnings = api.export_cryosparc("s", tmp_path / "out")
    assert any("num_mpi_ranks" in w and "CryoSPARC does not provide" in w for w in warnings), warnings
    assert json.loads(info_path.read_text())["qstat_cmd_tpl"] == "squeue -j {{ cluster_job_id }}"


# -- lint ---------------------------------------------------------------------------------------------
def test_lint_names_each_run_time_failure_by_file_and_line(api):
    templates = api.instance.paths.templates
    (templates / "bad.sh.j2").write_text("#!/bin/bash\n#SBATCH --job-name=fixed\n#SBATCH --ntasks=1\n"
                                         "#SBATCH --comment=\"{{ job_title }} x\"\nsrun {{ run_cmd }}\n")
    config = api.instance.paths.site_configs / "bad.yaml"
    config.write_text("lanes:\n  - name: bad\n    type: cluster\n    kind: slurm\n    script_template: bad.sh.j2\n"
                      "    status_cmd: squeue -j {{ cluster_job_id }}\n    submit_cmd: qsubmit {{ script_path_abs }}\n")
    warnings = lint(lane_of(api, "bad"))
    template = str(templates / "bad.sh.j2")
    expected = [(f"{config}:6", "asks about one job"), (f"{template}:5", "exit-code sentinel"),
                (f"{template}:2", "not {{ job_name }}"), (f"{template}:3", "gets 1 task(s)"),
                (f"{template}:1", "2 GPUs"), (f"{template}:4", "inside double quotes"),
                (f"{template}:5", "another launcher"), (f"{config}:7", "not sbatch")]
    for where, what in expected:
        assert any(w.startswith(where + ":") and what in w for w in warnings), (where, what, warnings)
    assert len(warnings) == len(expected)
    out = cli(api.instance.home, "lane", "validate", check=True).stdout
    assert out.count("warning: lane bad:") == len(expected)


@pytest.mark.parametrize("template", ["slurm.sh.j2", "pbs.sh.j2", "sge.sh.j2"])
def test_shipped_templates_lint_clean(api, template):
    kind = template.split(".")[0]
    (api.instance.paths.site_configs / "x.yaml").write_text(
        f"lanes:\n  - {{name: x, type: cluster, kind: {kind}, script_template: {template}, "
        "custom_vars: [{name: walltime, default: '1:00:00'}, {name: queue, default: q}, {name: pe, default: smp}]}\n")
    assert lint(lane_of(api, "x")) == []


def test_validate_from_another_folder_finds_the_instances_templates_and_prints_absolute_paths(api, tmp_path):
    (api.instance.paths.templates / "site.sh.j2").write_text((TEMPLATE_DIR / "slurm.sh.j2").read_text())
    elsewhere = tmp_path / "drafts"
    elsewhere.mkdir()
    (elsewhere / "l.yaml").write_text("lanes:\n  - {name: l, type: cluster, kind: slurm, script_template: site.sh.j2}\n")
    out = subprocess.run([*cli_cmd(api), "lane", "validate", "l.yaml"], cwd=elsewhere, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"l: template {api.instance.paths.templates / 'site.sh.j2'}" in out.stdout


def cli_cmd(api):
    return [sys.executable, "-m", "cryohpc.cli", "--home", str(api.instance.home)]


# -- lane files ---------------------------------------------------------------------------------------
def test_add_copies_the_config_and_its_template_remove_and_dump_round_trip(api, tmp_path):
    src = tmp_path / "new"
    src.mkdir()
    (src / "gpu.sh.j2").write_text((TEMPLATE_DIR / "slurm.sh.j2").read_text())
    (src / "gpu.yaml").write_text("lanes:\n  - {name: gpu, type: cluster, kind: slurm, script_template: gpu.sh.j2,\n"
                                  "     poll_interval_s: 3, custom_vars: [{name: account, required: true}]}\n")
    out = cli(api.instance.home, "lane", "add", str(src / "gpu.yaml"), check=True).stdout
    assert "added gpu" in out and (api.instance.paths.site_configs / "gpu.sh.j2").exists()
    assert "gpu" in api.lanes()
    clash = cli(api.instance.home, "lane", "add", str(src / "gpu.yaml"))
    assert clash.returncode != 0 and "exists" in clash.stderr
    dumped = tmp_path / "dumped"
    cli(api.instance.home, "lane", "dump", "gpu", "--dir", str(dumped), check=True)
    (lane,) = load_site_config(dumped / "gpu.yaml")
    assert lane.poll_interval_s == 3 and lane.custom_vars[0].required and (dumped / "gpu.sh.j2").exists()
    project = api.create_project("p")
    job = project.create_job("simulate_particles", params={"n_particles": 10})
    job.queue(lane="gpu", custom_vars={"account": "a"})
    busy = cli(api.instance.home, "lane", "remove", "gpu", "--yes")
    assert busy.returncode != 0 and "queued or running" in busy.stderr and "gpu" in api.lanes()
    job.kill()
    cli(api.instance.home, "lane", "remove", "gpu", "-y", check=True)  # -y as every command takes it
    assert "gpu" not in api.lanes() and not (api.instance.paths.site_configs / "gpu.yaml").exists()


def test_adding_a_broken_file_names_it_and_writes_nothing(api, tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("lanes:\n  - name: b\n    type: cluster\n    kind: slurm\n    script_template: nowhere.sh.j2\n")
    out = cli(api.instance.home, "lane", "add", str(bad))
    assert out.returncode != 0 and "nowhere.sh.j2" in out.stderr and "Traceback" not in out.stderr
    assert not (api.instance.paths.site_configs / "b.yaml").exists()


def test_init_makes_a_templates_folder(api):
    assert api.instance.paths.templates.is_dir()


# -- shapes and cache paths ---------------------------------------------------------------------------
def test_shapes_parse_and_bad_ones_are_named():
    assert parse_shape("cpus=8,gpus=2,ranks=2,ram_gb=64") == Resources(cpus=8, gpus=2, ram_gb=64, mpi_ranks=2)
    assert parse_shape("ranks=4").cpus == 4
    for bad, what in (("cpu=8", "'cpu=8'"), ("ranks=x", "ranks must be a number"), ("ranks=0", "at least 1")):
        with pytest.raises(UserError, match=re.escape(what)):
            parse_shape(bad)


NAMES = st.sampled_from(["A", "B_2", "SLURM_TMPDIR"])
WORDS = st.text("abc/._-", max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(WORDS, NAMES.map(lambda n: "$" + n), NAMES.map(lambda n: "${" + n + "}"),
                          st.tuples(NAMES, WORDS).map(lambda t: f"${{{t[0]}:-{t[1]}}}")), min_size=1, max_size=5).map("".join),
       st.dictionaries(NAMES, st.text("xyz/", min_size=1, max_size=4)))
def test_cache_paths_expand_as_bash_expands_them(path, environ):
    """The shell is the peer: every ``$VAR``, ``${VAR}`` and ``${VAR:-default}`` path
    expands as bash would, and one naming an unset variable without a default is refused."""
    env = {"PATH": "/usr/bin:/bin", **environ}
    bash = subprocess.run(["bash", "-uc", f'printf %s "{path}"'], env=env, capture_output=True, text=True)
    try:
        ours = expand_path_variables(path, env)
    except UserError:
        assert bash.returncode != 0 and "unbound variable" in bash.stderr
        return
    assert bash.returncode == 0 and ours == bash.stdout


def test_an_empty_variable_without_a_default_is_refused_not_read_as_the_root():
    with pytest.raises(UserError, match=r"\$SLURM_TMPDIR, which is unset \(or empty\)"):
        expand_path_variables("$SLURM_TMPDIR/cryohpc", {"SLURM_TMPDIR": ""})
    assert expand_path_variables("${SLURM_TMPDIR:-/tmp}/c", {"SLURM_TMPDIR": ""}) == "/tmp/c"


def test_a_yaml_dump_of_an_imported_config_loads_back(api, tmp_path):
    ported, _ = api.import_cryosparc(write_pair(tmp_path / "cs"), values={"partition": "gpu", "hours": "1"})
    config, _ = api.install_ported(ported, tmp_path / "out")
    assert yaml.safe_load(config.read_text())["lanes"][0]["cryosparc"]["qstat_cmd_tpl"] == INFO["qstat_cmd_tpl"]
    assert import_pair(tmp_path / "cs", values={"partition": "gpu", "hours": "1"}).template == \
        (tmp_path / "out" / "hpc-gpu.sh.j2").read_text()
    assert to_cryosparc(ported.template)[0] == SCRIPT


def test_the_admin_guide_lists_every_setting_the_loader_knows():
    from cryohpc.lanes.siteconfig import (
        ClusterLaneConfig,
        CustomVar,
        NodeLaneConfig,
        WorkerSettings,
        WorkerTarget,
    )

    doc = (Path(__file__).resolve().parents[1] / "docs" / "site-admin.md").read_text()
    tables = doc[doc.index("## Every setting"):doc.index("## Troubleshooting by message")]
    for model in (ClusterLaneConfig, WorkerSettings, CustomVar, NodeLaneConfig, WorkerTarget):
        missing = [name for name in model.model_fields if name != "source" and f"| `{name}` |" not in tables]
        assert not missing, (model.__name__, missing)


def test_the_import_knows_every_variable_cryohpc_gives_templates_and_commands(tmp_path):
    """A variable cryohpc provides but the import does not know would be declared as a
    custom variable of every imported lane, and shadow cryohpc's own value."""
    (lane,) = load_site_config(TEMPLATE_DIR.parent.parent / "site-configs" / "slurm-example.yaml")
    lane = ClusterLane(lane.model_copy(update={"custom_vars": [], "custom_values": {}}))
    given_to_scripts = set(lane.variables(sample_request(tmp_path / "J0", tmp_path, Resources(), "dev")))
    given_to_commands = {"cluster_job_id", "job_ids", "job_id_args", "job_names", "command"}
    assert given_to_scripts | given_to_commands == PROVIDED


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 4), data=st.data())
def test_removing_one_lane_of_several_keeps_the_others_and_their_comments(api, n, data):
    gone = data.draw(st.integers(0, n - 1))
    flow = data.draw(st.booleans())
    entries = []
    for i in range(n):
        body = (f"  - {{name: l{i}, type: cluster, kind: slurm, script_template: slurm.sh.j2}}\n" if flow else
                f"  - name: l{i}   # lane {i}\n    type: cluster\n    kind: slurm\n"
                f"    # the stock template\n    script_template: slurm.sh.j2\n")
        entries.append(f"  # about l{i}\n{body}" if i else body)
    text = "# admin's notes\nlanes:\n" + "".join(entries) + "workers: []\n# the end\n"
    path = api.instance.paths.site_configs / "many.yaml"
    path.write_text(text)
    assert api.remove_lane(f"l{gone}")
    kept = [i for i in range(n) if i != gone]
    left = [f"l{i}" for i in kept]
    if not left:
        assert not path.exists() or [c.name for c in load_site_config(path)] == []
        return
    after = path.read_text()
    assert [c.name for c in load_site_config(path)] == left
    assert "# admin's notes" in after and "# the end" in after
    for i in kept:
        assert (f"# lane {i}" in after) != flow
        assert (f"# about l{i}" in after) == (i > 0)
    assert f"l{gone}" not in after


def test_removing_from_a_one_line_lanes_list_rewrites_the_file_and_says_comments_went(api):
    path = api.instance.paths.site_configs / "flow.yaml"
    path.write_text("# notes\nlanes: [{name: a, type: cluster, kind: slurm, script_template: slurm.sh.j2},\n"
                    "        {name: b, type: cluster, kind: pbs, script_template: pbs.sh.j2}]\n")
    assert "comments in it were not" in api.remove_lane("a")
    assert [(c.name, c.kind) for c in load_site_config(path)] == [("b", "pbs")]
