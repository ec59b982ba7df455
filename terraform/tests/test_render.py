"""The configs and scripts an instance boots with: rendered exactly as Terraform would, valid
for the program that reads them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hcltemplate
import tfcheck

TEMPLATES = tfcheck.TERRAFORM_DIR / "templates"
NATS_SERVER = Path(sys.executable).with_name("nats-server")


# --- the renderer agrees with Terraform ------------------------------------------------


@pytest.mark.parametrize(
    "template, variables, expected",
    [
        ("a\n%{ for x in xs ~}\n    line ${x}\n%{ endfor ~}\n  end", {"xs": [1, 2]}, "a\n    line 1\n    line 2\n  end"),
        ("foo  \n\n   %{~ if c ~}  \n\n  bar%{ endif }|${s~}  \n\n  b", {"c": True, "s": "a"}, "foo  \n\n\n  bar|a\n  b"),
        ("%{ for k, v in m }${k}=${v};%{ endfor }", {"m": {"b": 2, "a": 1}}, "a=1;b=2;"),
        ("%{ if n > 1 }many%{ else }one%{ endif } $${literal} %%{ literal }", {"n": 1}, "one ${literal} %{ literal }"),
        ("[%{ for i, u in us }%{ if i > 0 }, %{ endif }\"${u}\"%{ endfor }]", {"us": ["a", "b"]}, '["a", "b"]'),
    ],
)
def test_renderer_follows_terraform_rules(template, variables, expected):
    assert hcltemplate.render(template, variables) == expected


@pytest.mark.parametrize(
    "template, variables",
    [
        ("${missing}", {}),
        ("${x}", {"x": None}),
        ("${upper(x)}", {"x": "a"}),
        ("%{ for x in xs }", {"xs": []}),
        ("%{ endif }", {}),
    ],
)
def test_renderer_refuses_what_it_cannot_render(template, variables):
    with pytest.raises(hcltemplate.TemplateError):
        hcltemplate.render(template, variables)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on this machine")
def test_renderer_matches_terraform_templatefile(plan, tree, tmp_path):
    """Where a terraform binary happens to exist, compare with its own templatefile()."""
    seen = set()
    for label, template, variables in tfcheck.config_inputs(plan, tree):
        if template.name in seen:
            continue
        seen.add(template.name)
        vars_file = tmp_path / f"{template.name}.json"
        vars_file.write_text(json.dumps(variables))
        expr = f'jsonencode(templatefile("{template}", jsondecode(file("{vars_file}"))))'
        proc = subprocess.run(
            ["terraform", "console"],
            input=expr,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1"),
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        expected = json.loads(json.loads(proc.stdout.strip()))
        assert hcltemplate.render(template.read_text(), variables) == expected, label
    assert len(seen) == 4


# --- nats-server accepts every rendered NATS config ------------------------------------


@pytest.fixture(scope="module")
def test_certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make throwaway certificates")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "server-key.pem"), "-out", str(d / "server.pem"), "-days", "1",
            "-subj", "/CN=nats.test", "-addext", "subjectAltName=DNS:nats.test",
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(d / "server.pem", d / "ca.pem")
    return d


def nats_server_test(conf_text: str, path: Path) -> subprocess.CompletedProcess:
    path.write_text(conf_text)
    env = dict(os.environ, INGEST_PASSWORD="x", EDGE_PASSWORD="x", ADMIN_PASSWORD="x")
    assert NATS_SERVER.exists(), f"{NATS_SERVER} is missing: run the tests through terraform/tests/run.sh"
    return subprocess.run([str(NATS_SERVER), "-t", "-c", str(path)], capture_output=True, text=True, env=env, timeout=60)


def rendered_nats_confs(plan, tree, certs: Path, store: Path):
    for label, template, variables in tfcheck.config_inputs(plan, tree):
        if template.name.endswith(".conf.tftpl"):
            local = dict(variables, tls_dir=str(certs), store_dir=str(store))
            yield label, hcltemplate.render(template.read_text(), local)


def test_every_rendered_nats_config_passes_nats_server_t(plan, tree, test_certs, tmp_path):
    confs = list(rendered_nats_confs(plan, tree, test_certs, tmp_path / "js"))
    assert len(confs) == 12
    for i, (label, text) in enumerate(confs):
        proc = nats_server_test(text, tmp_path / f"{i}.conf")
        assert proc.returncode == 0, f"{label}:\n{proc.stdout}{proc.stderr}"


def test_invalid_nats_config_fails_nats_server_t(broken, test_certs, tmp_path):
    broken.edit("templates/leaf.conf.tftpl", "      urls: [\n", '      user: "leaf"\n      urls: [\n')
    label, text = next(c for c in rendered_nats_confs(broken.plan(), broken.root, test_certs, tmp_path / "js") if "leaf" in c[0])
    proc = nats_server_test(text, tmp_path / "broken.conf")
    assert proc.returncode != 0
    assert 'unknown field "user"' in proc.stdout + proc.stderr


# --- instance bootstrap scripts --------------------------------------------------------

BOOTSTRAP_VARS = {
    "nats-leaf": {
        "role": "nats-leaf",
        "service_user": "nats",
        "tls_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:leaf-tls",
        "tls_dir": "/etc/nats/tls",
        "env_file": "/etc/nats/nats.env",
        "env_secrets": {"EDGE_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:edge"},
        "env_plain": {},
        "file_secrets": {},
        "nats_url_env": [],
        "data_volume_id": "vol-0123456789abcdef0",
        "data_dir": "/var/lib/nats",
        "artifacts": {"/opt/tickmesh/bin/nats-server": "s3://bucket/nats/2.15.1/arm64/nats-server"},
        "files": {"/etc/nats/nats.conf": "c2VydmVyX25hbWU6IHgK"},
        "units": ["nats-server.service", "tickmesh-kv-mirror.service"],
        "sysctls": {"net.core.somaxconn": 4096},
    },
    "edge": {
        "role": "edge",
        "service_user": "tickmesh",
        "tls_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:edge-tls",
        "tls_dir": "/etc/tickmesh/tls",
        "env_file": "/etc/tickmesh/edge.env",
        "env_secrets": {},
        "env_plain": {"RUST_LOG": "info"},
        "file_secrets": {"/etc/tickmesh/tls/jwt.key": "arn:aws:secretsmanager:us-east-1:123456789012:secret:jwt"},
        "nats_url_env": [
            {
                "env": "TICKMESH_EDGE_NATS__URLS",
                "user": "edge",
                "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:edge",
                "urls": ["tls://nats-a.eu-west-1.tickmesh.internal:4222", "tls://nats-b.eu-west-1.tickmesh.internal:4222"],
            }
        ],
        "data_volume_id": "",
        "data_dir": "",
        "artifacts": {"/opt/tickmesh/bin/tickmesh-edge": "s3://bucket/tickmesh/1.0.0/arm64/tickmesh-edge"},
        "files": {"/etc/tickmesh/edge.toml": "W3NlcnZlcl0K"},
        "units": ["tickmesh-edge.service", "tickmesh-lifecycle.service"],
        "sysctls": {"net.core.somaxconn": 4096, "net.ipv4.ip_local_port_range": "1024 65000"},
    },
}

SCRIPTS = {
    "ensure-kv-mirror.sh.tftpl": {
        "server_url": "tls://nats-a.eu-west-1.tickmesh.internal:4222",
        "tls_dir": "/etc/nats/tls",
        "domain": "eu-west-1",
        "hub_domain": "hub",
        "replicas": 3,
    },
    "edge-lifecycle-watch.sh.tftpl": {"deregistration_delay_s": 90, "poll_interval_s": 5},
}


def bash_n(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)


@pytest.mark.parametrize("role", sorted(BOOTSTRAP_VARS))
def test_bootstrap_script_is_valid_bash(role):
    text = hcltemplate.render((TEMPLATES / "bootstrap.sh.tftpl").read_text(), BOOTSTRAP_VARS[role])
    assert text.startswith("#!/bin/bash\n")
    proc = bash_n(text)
    assert proc.returncode == 0, proc.stderr
    assert ("mkfs.xfs" in text) == (role == "nats-leaf")
    for unit in BOOTSTRAP_VARS[role]["units"]:
        assert f'systemctl enable --now "{unit}"' in text


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_helper_scripts_are_valid_bash(name):
    proc = bash_n(hcltemplate.render((TEMPLATES / name).read_text(), SCRIPTS[name]))
    assert proc.returncode == 0, proc.stderr


def test_broken_bootstrap_script_is_reported(broken):
    broken.edit("templates/bootstrap.sh.tftpl", '( umask 077; : > "${env_file}" )', '( umask 077; : > "${env_file}"')
    text = (broken.root / "templates/bootstrap.sh.tftpl").read_text()
    proc = bash_n(hcltemplate.render(text, BOOTSTRAP_VARS["edge"]))
    assert proc.returncode != 0


def test_edge_unit_waits_out_the_drain():
    unit = hcltemplate.render(
        (TEMPLATES / "systemd/tickmesh-service.service.tftpl").read_text(),
        {"service": "edge", "env_file": "/etc/tickmesh/edge.env", "stop_timeout_s": 60},
    )
    assert "ExecStart=/opt/tickmesh/bin/tickmesh-edge --config /etc/tickmesh/edge.toml" in unit
    assert "KillSignal=SIGTERM" in unit
    assert "TimeoutStopSec=60" in unit
