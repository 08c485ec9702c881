"""The one template engine: the same argv from every formatter, brace escaping, the shell checks,
and hostile values that must never run as commands (rendered text run by a real shell, and jobs
run by a real worker)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess
from helpers import PYTHON

from whatsnext.api.client import CLIFormatter, FormatError, JobSpec
from whatsnext.api.client.formatters.runai import RUNAIFormatter
from whatsnext.api.client.formatters.slurm import SlurmFormatter
from whatsnext.api.client.template import CommandTemplate, render_text, script_argv, value_text
from whatsnext.template import TemplateError, check_shell_template, check_template, placeholders

PARAMS: dict[str, Any] = {
    "flag": True,
    "off": False,
    "none": None,
    "tags": ["a", "b c"],
    "cfg": {"k": [1, 2]},
    "lr": 0.1,
    "epochs": 3,
    "text": "two words",
    "quotes": """it's "quoted" """,
}
#: Values that would run a command if a shell ever read them as syntax (each touches a file).
HOSTILE = {
    "subst": "$(touch X1)",
    "semi": "; touch X2",
    "backtick": "`touch X3`",
    "newline": "a\n touch X4",
    "squote": "'; touch X5; '",
    "dquote": '"; touch X6; "',
    "amp": "x && touch X7 #",
}


def job(parameters: dict[str, Any], name: str = "sweep", **kwargs: Any) -> JobSpec:
    return JobSpec(id=5, name=name, task="train", parameters=parameters, **kwargs)


def three(**kwargs: Any) -> tuple[CLIFormatter, SlurmFormatter, RUNAIFormatter]:
    """The same command through the CLI, SLURM and RUN:AI formatters."""
    script, template = kwargs.get("script"), kwargs.get("template")
    cli = (
        CLIFormatter(executable="python", script=script)
        if script
        else CLIFormatter(template=template, shell=kwargs.get("shell", False))
    )
    slurm = SlurmFormatter(script=script, command=template, shell=kwargs.get("shell", False))
    runai = RUNAIFormatter(
        project="p", image="i", script=script, command=template, shell=kwargs.get("shell", False)
    )
    return cli, slurm, runai


def bash_argv(command: str) -> list[str]:
    """The words bash makes of a command line (what a batch script's last line runs)."""
    out = subprocess.run(
        ["bash", "-c", f"set -- {command}; printf '%s\\0' \"$@\""],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    return out.decode().split("\0")[:-1]


def argvs(params: dict[str, Any], tmp_path: Path, **kwargs: Any) -> list[list[str]]:
    """Each formatter's argv: as run, as formatted, and as written into the sbatch script."""
    cli, slurm, runai = three(**kwargs)
    slurm.log_dir = tmp_path
    script_text = slurm.render_script(job(params), {})
    command = slurm.format("train", params)
    assert script_text.endswith("\n" + command + "\n")  # the script's last line(s)
    return [
        cli.argv("train", params),
        shlex.split(cli.format("train", params)),
        bash_argv(command),
        runai.container_argv(job(params)),
        shlex.split(runai.format("train", params)),
    ]


# ---------------------------------------------------------------- one engine, one argv


def test_script_mode_gives_the_same_argv_everywhere(tmp_path: Path) -> None:
    expected = [
        "python",
        "train.py",
        "--flag",
        "--tags",
        "a",
        "b c",
        "--cfg",
        '{"k":[1,2]}',
        "--lr",
        "0.1",
        "--epochs",
        "3",
        "--text",
        "two words",
        "--quotes",
        """it's "quoted" """,
    ]
    for argv in argvs(PARAMS, tmp_path, script="train.py"):
        assert argv == expected


def test_template_mode_gives_the_same_argv_everywhere(tmp_path: Path) -> None:
    template = "python train.py --lr={lr:.3f} --tags {tags} --cfg {cfg} --note {text} {quotes} {none}x {flag}"
    expected = [
        "python",
        "train.py",
        "--lr=0.100",
        "--tags",
        '["a","b c"]',
        "--cfg",
        '{"k":[1,2]}',
        "--note",
        "two words",
        """it's "quoted" """,
        "x",
        "True",
    ]
    for argv in argvs(PARAMS, tmp_path, template=template):
        assert argv == expected
    for argv in argvs(HOSTILE, tmp_path, template="prog {subst} {semi} {backtick} {newline} {squote}"):
        assert argv == ["prog", *(HOSTILE[k] for k in ("subst", "semi", "backtick", "newline", "squote"))]


def test_value_rules() -> None:
    assert [value_text(v) for v in ("s", 1, 2.5, True, None, [1, "a"], {"a": None})] == [
        "s",
        "1",
        "2.5",
        "True",
        "",
        '[1,"a"]',
        '{"a":null}',
    ]
    assert script_argv(None, "run.sh", {"n": 0, "empty": [], "off": False}) == [
        "run.sh",
        "--n",
        "0",
        "--empty",
    ]
    assert value_text(0.5, ".2f") == "0.50" and value_text("x", "", "r") == "'x'"


def test_braces_are_escaped_by_doubling(tmp_path: Path) -> None:
    template = "awk '{{print $1}}' {path}"
    for argv in argvs({"path": "my file"}, tmp_path, template=template):
        assert argv == ["awk", "{print $1}", "my file"]
    shell = CLIFormatter(template="awk '{{print $1}}' {path} | sort", shell=True)
    assert shell.format("t", {"path": "my file"}) == "awk '{print $1}' 'my file' | sort"
    assert render_text("out/{{x}}/{n}", {"n": 1}) == "out/{x}/1"
    assert placeholders("a {x} {{y}} {z:>3} {x}") == ["x", "z"]


def test_missing_placeholders_and_bad_templates_are_named() -> None:
    for fmt in three(template="python train.py --lr {lr} --epochs {epochs}"):
        with pytest.raises(FormatError, match="missing parameter 'epochs'"):
            fmt.format("train", {"lr": 0.1})
    for bad, match in [
        ("run {}", "name it after a parameter"),
        ("run {0}", "name it after a parameter"),
        ("run {a.b}", "plain parameter names"),
        ("run {a[0]}", "plain parameter names"),
        ("run {a", "bad template"),
        ("run 'unclosed", "bad template"),
    ]:
        with pytest.raises(FormatError, match=match):
            CLIFormatter(template=bad)


def test_keys_must_be_option_names() -> None:
    for fmt in three(script="train.py"):
        for key in ("a;touch /tmp/x", "a b", "-x", "", "a\nb", "$(id)"):
            with pytest.raises(FormatError, match="cannot be written as an option"):
                fmt.format("train", {key: 1})
    assert script_argv(None, "s", {"batch-size": 2, "a.b": 1, "_x": True}) == [
        "s",
        "--batch-size",
        "2",
        "--a.b",
        "1",
        "--_x",
    ]


# ---------------------------------------------------------------- shell templates

QUOTED = [
    ("echo '{m}'", "inside single quotes"),
    ('echo "{m}"', "inside double quotes"),
    ("echo \"x $(cat '{m}')\"", "inside single quotes"),
    ("echo $'{m}'", "inside $'...' quotes"),
    ("echo \\{m}", "right after a backslash"),
    ("echo ${m}", "right after '$'"),
    ("echo ${{x:-{m}}}", "inside ${ ... }"),
    ("echo `cat {m}`", "inside backticks"),
    ("echo hi # {m}", "inside a comment"),
    ("cat <<EOF\nline {m}\nEOF", "inside a here-document"),
    ("cat <<'EOF'\n{m}\nEOF", "inside a here-document"),
]
ACCEPTED = [
    "echo {m}",
    "echo --out=dir/{m}.txt",
    "printf '%s\\n' {m} | cat",
    'echo "$(printf %s {m})"',
    "echo $(printf %s {m})",
    "(echo {m})",
    "cat <<EOF\nfixed text\nEOF\necho {m}",
    "echo x#{m}",
    "echo '{{m}}' {m}",
]


@pytest.mark.parametrize(("template", "where"), QUOTED)
def test_placeholders_inside_quotes_are_refused(template: str, where: str) -> None:
    with pytest.raises(TemplateError, match=rf"placeholder \{{m\}} is {re.escape(where)}"):
        check_shell_template(template)
    with pytest.raises(FormatError, match="write the placeholder unquoted"):
        CLIFormatter(template=template, shell=True)
    with pytest.raises(FormatError):
        SlurmFormatter(command=template, shell=True)
    check_template(template)  # not run by a shell: nothing to refuse


def test_shell_code_words_follow_the_shell_rules() -> None:
    # A placeholder inside the script of `bash -c`: filled shell-quoted, and refused inside quotes.
    fmt = CLIFormatter(template="bash -c 'echo {m} >/dev/null'")
    assert fmt.argv("t", {"m": "$(touch X)"}) == ["bash", "-c", "echo '$(touch X)' >/dev/null"]
    with pytest.raises(FormatError, match="inside double quotes"):
        CLIFormatter(template="""sh -ec 'echo "{m}"'""")
    # A placeholder alone as the script: the parameter is the code, as the task says.
    assert CLIFormatter(template="bash -c {code}").argv("t", {"code": "exit 3"}) == ["bash", "-c", "exit 3"]


@pytest.mark.parametrize("template", ACCEPTED)
def test_accepted_shell_templates_run_values_as_data(template: str, tmp_path: Path) -> None:
    fmt = CLIFormatter(template=template, shell=True)
    for name, value in HOSTILE.items():
        line = fmt.format("t", {"m": value})
        proc = subprocess.run(
            ["/bin/sh", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=10, check=False
        )
        assert proc.returncode == 0, (name, line, proc.stderr)
        # (the template may word-split its own output, as `echo $(...)` does: compare the words)
        assert " ".join(value.split()) in " ".join(proc.stdout.split()), (name, line, proc.stdout)
    assert sorted(os.listdir(tmp_path)) == [], "a value ran as a command"


def test_the_check_needs_no_client_code() -> None:
    code = (
        "import sys, whatsnext.template as t; t.check_shell_template('echo {m}'); "
        "assert not [m for m in sys.modules if m.startswith('whatsnext.api')], 'client imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# ---------------------------------------------------------------- the sbatch script


def test_sbatch_script_keeps_names_and_values_in_their_place(tmp_path: Path) -> None:
    fmt = SlurmFormatter(command="printf '%s\\n' {subst} {semi} {backtick} {newline} {squote} {dquote} {amp}")
    name = "evil\n touch X8\n#SBATCH --wrap=touch X9"
    spec = job(HOSTILE, name=name, required_cpu=1)
    spec.task = "t\ntouch X10"
    script = fmt.render_script(spec, {"EXTRA": "v\ntouch X11"}, cwd=str(tmp_path))
    lines = script.splitlines()
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch[0] == "#SBATCH --job-name=wn-5-evil_touch_X8_SBATCH_--wrap_touch_X9"
    assert not any(line.startswith("#SBATCH --wrap") for line in lines)
    assert lines[len(sbatch) + 1].startswith("# WhatsNext job 5 (evil? touch X8?#SBATCH")
    # Run the script body with bash (as the compute node would): the values are printed, nothing
    # else runs.
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=10, check=False
    )
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.split("\n")
    for value in HOSTILE.values():
        assert value.split("\n")[0] in printed
    assert os.listdir(tmp_path) == []
    with pytest.raises(FormatError, match="cannot be written as an option"):
        SlurmFormatter(script="p.py").render_script(job({"a;touch X": 1}))


# ---------------------------------------------------------------- a real worker


async def test_hostile_values_through_a_real_worker(
    api: Api, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    p = project["name"]
    write = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    template = f'{PYTHON} -c "{write}" out-{{n}}.txt {{m}}'
    jobs = {}
    for n, (key, value) in enumerate(HOSTILE.items()):
        made = await api.ok(
            "POST",
            f"/projects/{p}/jobs",
            {"name": f"{key}\n touch X{n}", "task": "t", "parameters": {"n": n, "m": value}},
        )
        jobs[made["id"]] = (n, value)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "WHATSNEXT_SERVER": server.url, "PYTHONPATH": root}
    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "whatsnext", "worker", "--project", p, "--command", template, "--shell"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    for job_id, (n, value) in jobs.items():
        shown = await api.ok("GET", f"/jobs/{job_id}")
        assert shown["status"] == "COMPLETED", shown
        assert (tmp_path / f"out-{n}.txt").read_text() == value
    assert sorted(os.listdir(tmp_path)) == sorted(f"out-{n}.txt" for n, _ in jobs.values())

    # A quoted placeholder stops the worker before it claims anything.
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "whatsnext", "worker", "--project", p, "--command", "echo '{m}'", "--shell"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "inside single quotes" in refused.stderr


def test_command_template_needs_one_source() -> None:
    with pytest.raises(ValueError):
        CommandTemplate()
    with pytest.raises(ValueError):
        CommandTemplate(script="a.py", shell=True)
