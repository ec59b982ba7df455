"""The configs and scripts an instance boots with: rendered exactly as Terraform would, valid
for the program that reads them."""

import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tomllib
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
    env = dict(os.environ, INGEST_PASSWORD="x", OMS_PASSWORD="x", EDGE_PASSWORD="x", ADMIN_PASSWORD="x")
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


# --- edge and ingest: TLS and credentials towards NATS ----------------------------------

SERVICE_USERS = {"edge.toml.tftpl": "edge", "ingest.toml.tftpl": "ingest"}


def rendered_service_confs(plan, tree):
    for label, template, text in tfcheck.rendered_configs(plan, tree):
        if template in SERVICE_USERS:
            yield label, SERVICE_USERS[template], text


def test_service_configs_use_nats_tls_and_auth_without_credentials_in_urls(plan, tree):
    confs = list(rendered_service_confs(plan, tree))
    assert len(confs) == 9 + 1, [label for label, _, _ in confs]
    for label, user, text in confs:
        nats = tomllib.loads(text)["nats"]
        assert nats["tls"]["ca_file"] == "/etc/tickmesh/tls/ca.pem", label
        assert nats["auth"] == {"user": user, "password_file": f"/etc/tickmesh/nats-{user}.password"}, label
        assert nats["urls"], label
        for url in nats["urls"]:
            assert url.startswith("nats://") and "@" not in url, f"{label}: {url}"
        assert not re.search(r"(?m)^\s*(password|pass|token)\s*=", text), label


# --- edge: tokens required, /metrics on its own port --------------------------------------

EXAMPLE_TFVARS = "envs/example/terraform.tfvars.example"


def rendered_edge_confs(plan, tree):
    return [(label, tomllib.loads(text)) for label, template, text in tfcheck.rendered_configs(plan, tree) if template == "edge.toml.tftpl"]


def test_every_edge_config_requires_tokens_for_this_audience_and_issuer(plan, tree):
    confs = rendered_edge_confs(plan, tree)
    assert len(confs) == 9, [label for label, _ in confs]
    assert tfcheck.edge_auth_problems(plan, tree) == []
    for label, conf in confs:
        auth = conf["auth"]
        # The values of terraform.tfvars.example, through the module's inputs.
        assert auth["anonymous"] is False, label
        assert "anonymous_ent" not in auth and "allow_open_anonymous" not in auth, label
        assert auth["audience"] == "tickmesh", label
        assert auth["issuer"] == "https://auth.example.com/", label
        assert auth["max_token_lifetime_s"] == 900, label
        assert auth["hs256_secret_file"] == "/etc/tickmesh/tls/jwt.key", label
        assert conf["metrics_listen"] == "0.0.0.0:9102", label
        assert conf["listen"] == "0.0.0.0:8080", label


def test_edge_auth_follows_what_the_operator_sets(broken):
    broken.edit(EXAMPLE_TFVARS, 'jwt_audience             = "tickmesh"', 'jwt_audience             = "md-feed"')
    broken.edit(EXAMPLE_TFVARS, "jwt_max_token_lifetime_s = 900", "jwt_max_token_lifetime_s = 300")
    broken.edit(
        "envs/example/region_eu_west_1.tf",
        "  jwt_max_token_lifetime_s  = var.jwt_max_token_lifetime_s\n",
        "  jwt_max_token_lifetime_s  = var.jwt_max_token_lifetime_s\n"
        '  edge_anonymous            = { enabled = true, tier = "delayed", ent = ["SPY", "AAPL*"] }\n'
        "  edge_metrics_port         = 9200\n",
    )
    plan = broken.plan()
    confs = rendered_edge_confs(plan, broken.root)
    assert len(confs) == 9
    for label, conf in confs:
        auth = conf["auth"]
        assert (auth["audience"], auth["max_token_lifetime_s"]) == ("md-feed", 300), label
        if "eu-west-1" in label or "eu_west_1" in label:
            assert auth["anonymous"] is True, label
            assert (auth["anonymous_tier"], auth["anonymous_ent"]) == ("delayed", ["SPY", "AAPL*"]), label
            assert conf["metrics_listen"] == "0.0.0.0:9200", label
        else:
            assert auth["anonymous"] is False, label
    assert tfcheck.edge_auth_problems(plan, broken.root) == []
    rules = [r for r in plan["aws_vpc_security_group_ingress_rule"] if ".aws_vpc_security_group_ingress_rule.edge_metrics" in tfcheck.path_of(r)]
    assert rules and all(r["from_port"] == r["to_port"] for r in rules)
    assert {r["from_port"] for r in rules if "eu_west_1" in tfcheck.path_of(r)} == {9200}
    # Only the monitoring system reaches it, and the load balancers never forward it.
    example = (broken.root / tfcheck.EXAMPLE_ENV / tfcheck.EXAMPLE_VARS).read_text()
    monitoring = set(re.findall(r'"([0-9./]+)"', re.search(r"monitoring_cidr_blocks\s*=\s*\[([^]]*)\]", example).group(1)))
    assert monitoring and {r["cidr_ipv4"] for r in rules} == monitoring
    lb_ports = {x.get("port") for kind in ("aws_lb_listener", "aws_lb_target_group") for x in plan.get(kind, [])}
    assert lb_ports and 9200 not in lb_ports, lb_ports


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("anonymous = ${anonymous}\n", "", "anonymous is not set"),
        ('audience = "${jwt_audience}"\n', "", "audience is not set"),
        ('issuer = "${jwt_issuer}"\n', "", "issuer is not set"),
        ("max_token_lifetime_s = ${jwt_max_token_lifetime_s}\n", "", "max_token_lifetime_s"),
        ('metrics_listen = "0.0.0.0:${metrics_port}"\n', "", "no metrics_listen"),
        ('metrics_listen = "0.0.0.0:${metrics_port}"', 'metrics_listen = "0.0.0.0:${listen_port}"', "shares the client port"),
    ],
)
def test_edge_config_that_lets_clients_in_too_easily_is_reported(broken, old, new, problem):
    broken.edit("templates/edge.toml.tftpl", old, new)
    problems = tfcheck.edge_auth_problems(broken.plan(), broken.root)
    assert len(problems) == 9 and all(problem in p for p in problems), problems


def test_open_anonymous_access_is_reported():
    conf = {
        "listen": "0.0.0.0:8080",
        "metrics_listen": "0.0.0.0:9102",
        "auth": {
            "anonymous": True,
            "anonymous_ent": ["*"],
            "allow_open_anonymous": True,
            "audience": "a",
            "issuer": "i",
            "max_token_lifetime_s": 60,
            "jwks_file": "/k",
        },
    }
    problems = tfcheck.edge_conf_problems("edge", conf)
    assert any("every symbol" in p for p in problems) and any("development only" in p for p in problems), problems


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
        "nats_password_files": {},
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
        "nats_password_files": {"/etc/tickmesh/nats-edge.password": "arn:aws:secretsmanager:us-east-1:123456789012:secret:edge"},
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
        "revocation_ttl_s": 86400,
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


def password_file_steps(template_text: str, path: Path, user: str) -> str:
    """The steps of the rendered bootstrap that write one NATS password file: from its
    comment to the next blank line."""
    variables = dict(BOOTSTRAP_VARS["edge"], service_user=user, nats_password_files={str(path): "arn:aws:secretsmanager:us-east-1:123456789012:secret:edge"})
    text = hcltemplate.render(template_text, variables)
    start = text.index("# NATS password of the service's user")
    end = text.find("\n\n", start)
    return text[start:] if end < 0 else text[start:end]


def write_password_file(template_text: str, tmp_path: Path) -> Path:
    """Run those steps with Secrets Manager replaced by a function that prints a password,
    as the current user (who plays the service user)."""
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        grp.getgrnam(user)
    except KeyError:
        pytest.skip(f"no group named {user}: the bootstrap chowns to <user>:<user>")
    path = tmp_path / "etc/tickmesh/nats-edge.password"
    steps = password_file_steps(template_text, path, user)
    script = "set -euo pipefail\numask 022\nsecret() { printf 's3cret\\n'; }\n" + steps + "\n"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return path


def test_bootstrap_writes_the_nats_password_for_the_service_only(tmp_path):
    template = (TEMPLATES / "bootstrap.sh.tftpl").read_text()
    path = write_password_file(template, tmp_path)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert path.read_text().splitlines()[0] == "s3cret"
    # No credentials are assembled into NATS URLs or handed over in the environment.
    text = hcltemplate.render(template, BOOTSTRAP_VARS["edge"])
    assert not re.search(r"://[^\s\"']*@", text)
    assert "NATS__URLS" not in text and "nats_password" not in text
    assert 'secret "arn:aws:secretsmanager:us-east-1:123456789012:secret:edge" > "/etc/tickmesh/nats-edge.password"' in text


def test_password_file_readable_by_others_is_reported(broken, tmp_path):
    broken.edit("templates/bootstrap.sh.tftpl", 'chmod 0600 "${path}"', 'chmod 0644 "${path}"')
    path = write_password_file((broken.root / "templates/bootstrap.sh.tftpl").read_text(), tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) != 0o600


def test_password_file_not_owned_by_the_service_is_reported(broken, tmp_path):
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user")
    broken.edit("templates/bootstrap.sh.tftpl", 'chown ${service_user}:${service_user} "${path}"', 'chown nobody "${path}"')
    path = write_password_file((broken.root / "templates/bootstrap.sh.tftpl").read_text(), tmp_path)
    assert path.stat().st_uid != os.getuid()


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
