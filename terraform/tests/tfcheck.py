"""Offline checks of terraform/: parsing, plan-like assertions over the evaluated
configuration, and checkov.

No terraform binary or provider is needed. tfparse evaluates the example environment with
its modules (for_each, locals, module inputs and outputs) from the files alone; values that
only exist after an apply (IDs, addresses) stay unknown, and the checks never depend on them.

Every check returns a list of human-readable problems: empty means it passed. The tests call
them on the real tree and on deliberately broken copies of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import hcl2
import tfparse
import yaml

import hcltemplate
import natsconf

TERRAFORM_DIR = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = Path("envs/example")
EXAMPLE_VARS = "terraform.tfvars.example"
CHECKOV_CONFIG = ".checkov.yaml"

NATS_PORTS = {4222: "client", 6222: "cluster", 7422: "leafnode", 8222: "monitoring"}
INTERNET = {"0.0.0.0/0", "::/0"}


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def hcl_files(root: Path) -> list[Path]:
    pats = ("*.tf", "*.tfvars", "*.tfvars.example")
    files = sorted({p for pat in pats for p in root.rglob(pat) if ".terraform" not in p.parts})
    return files


def parse_problems(root: Path) -> list[str]:
    """Every HCL file parses (python-hcl2), every template is well formed, the checkov
    config is valid YAML."""
    problems = []
    files = hcl_files(root)
    if not files:
        problems.append(f"no Terraform files under {root}")
    for path in files:
        try:
            hcl2.loads(path.read_text())
        except Exception as e:  # python-hcl2 raises lark errors of several kinds
            problems.append(f"{path.relative_to(root)}: {type(e).__name__}: {str(e).strip()[:300]}")
    for path in sorted(root.rglob("*.tftpl")):
        try:
            hcltemplate.check_syntax(path.read_text())
        except hcltemplate.TemplateError as e:
            problems.append(f"{path.relative_to(root)}: {e}")
    cfg = root / CHECKOV_CONFIG
    try:
        yaml.safe_load(cfg.read_text())
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{CHECKOV_CONFIG}: {e}")
    return problems


# --------------------------------------------------------------------------------------
# The evaluated configuration
# --------------------------------------------------------------------------------------


def load_plan(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The example environment with every module expanded, as tfparse evaluates it."""
    env = root / EXAMPLE_ENV
    return tfparse.load_from_path(env, vars_paths=[EXAMPLE_VARS])


def path_of(block: dict[str, Any]) -> str:
    return block["__tfmeta"]["path"]


def module_instances(plan: dict, module_dir: str) -> list[dict[str, Any]]:
    """Calls of the module in modules/<module_dir>, wherever they are."""
    return [m for m in plan.get("module", []) if str(m.get("source", "")).rstrip("/").endswith(f"modules/{module_dir}")]


def _blocks_as_list(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [v for v in value if isinstance(v, dict)]


_FOR_EACH_KEY = re.compile(r'\["([^"]+)"\]$')


def edge_group_problems(plan: dict) -> list[str]:
    """Every region has one edge Auto Scaling group per availability zone, each pinned to
    its zone, kept at one instance at least, and behind the region's NLB target group."""
    problems = []
    regions = module_instances(plan, "region")
    if not regions:
        return ["no call of modules/region in the example environment"]
    groups = plan.get("aws_autoscaling_group", [])
    for region in regions:
        where = path_of(region)
        azs = region.get("azs")
        if not isinstance(azs, list) or not azs:
            problems.append(f"{where}: azs is not a known list")
            continue
        prefix = f"{where}.aws_autoscaling_group.edge"
        found: dict[str, dict] = {}
        for g in groups:
            p = path_of(g)
            if p == prefix or p.startswith(prefix + "["):
                m = _FOR_EACH_KEY.search(p)
                found[m.group(1) if m else p] = g
        for az in azs:
            g = found.get(az)
            if g is None:
                problems.append(f"{where}: no edge Auto Scaling group in {az}")
                continue
            if not isinstance(g.get("min_size"), (int, float)) or g["min_size"] < 1:
                problems.append(f"{where}: edge group in {az} has min_size {g.get('min_size')!r}, not >= 1")
            subnets = g.get("vpc_zone_identifier") or []
            if len(subnets) != 1:
                problems.append(f"{where}: edge group in {az} spans {len(subnets)} subnets, not one zone")
            if not g.get("target_group_arns"):
                problems.append(f"{where}: edge group in {az} is not attached to the NLB target group")
            if g.get("health_check_type") != "ELB":
                problems.append(f"{where}: edge group in {az} does not use the NLB's /readyz health check")
        for key in sorted(set(found) - set(azs)):
            problems.append(f"{where}: edge group {key} is not in one of the region's zones {azs}")
    return problems


# --- rendered configs ------------------------------------------------------------------


def config_inputs(plan: dict, root: Path) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    """(label, template path, variables) of every service config the instances boot with.
    Modules keep each template's inputs in a `<x>_conf_vars` local (a map from instance
    group to variables) beside a `<x>_conf_template` local naming the file."""
    env = root / EXAMPLE_ENV
    for block in plan.get("locals", []):
        for key, per_group in block.items():
            if not key.endswith("_conf_vars"):
                continue
            template_key = key[: -len("_vars")] + "_template"
            template_path = block.get(template_key)
            where = f"{path_of(block)}.{key}"
            if not isinstance(template_path, str):
                raise AssertionError(f"{where}: no {template_key} local beside it")
            if not isinstance(per_group, dict) or not per_group:
                raise AssertionError(f"{where}: not a known map of template variables")
            for group, variables in sorted(per_group.items()):
                yield f"{where}[{group}]", (env / template_path).resolve(), variables


def rendered_configs(plan: dict, root: Path) -> Iterator[tuple[str, str, str]]:
    """(label, template file name, rendered text) of every service config."""
    for label, template, variables in config_inputs(plan, root):
        yield label, template.name, hcltemplate.render(template.read_text(), variables)


def _tls_problems(label: str, where: str, tls: Any, *, server: bool) -> list[str]:
    if not isinstance(tls, dict):
        return [f"{label}: {where} has no tls block"]
    problems = []
    if tls.get("insecure") is True:
        problems.append(f"{label}: {where}.tls sets insecure")
    needed = ("cert_file", "key_file") if server else ("ca_file",)
    for field in needed:
        if not tls.get(field):
            problems.append(f"{label}: {where}.tls lacks {field}")
    return problems


def nats_conf_problems(label: str, conf: dict[str, Any], role: str) -> list[str]:
    """Every listener and every link of one nats-server config uses TLS."""
    problems = _tls_problems(label, "client listener", conf.get("tls"), server=True)
    cluster = conf.get("cluster")
    if cluster is not None:
        problems += _tls_problems(label, "cluster", cluster.get("tls"), server=True)
        if cluster.get("tls", {}).get("verify") is not True and cluster.get("tls", {}).get("verify_and_map") is not True:
            problems.append(f"{label}: cluster routes do not verify peer certificates")
    gateway = conf.get("gateway")
    if gateway is not None:
        problems += _tls_problems(label, "gateway", gateway.get("tls"), server=True)
    for name in ("websocket", "mqtt"):
        if conf.get(name) is not None:
            problems += _tls_problems(label, name, conf[name].get("tls"), server=True)
    leaf = conf.get("leafnodes") or {}
    if "listen" in leaf or "port" in leaf:
        problems += _tls_problems(label, "leafnodes listener", leaf.get("tls"), server=True)
        t = leaf.get("tls") or {}
        if t.get("verify") is not True and t.get("verify_and_map") is not True:
            problems.append(f"{label}: leafnodes listener does not verify leaf certificates")
    remotes = leaf.get("remotes") or []
    for i, remote in enumerate(remotes):
        problems += _tls_problems(label, f"leafnodes.remotes[{i}]", remote.get("tls"), server=False)
        urls = remote.get("urls") or []
        if isinstance(urls, str):
            urls = [urls]
        if remote.get("url"):
            urls = urls + [remote["url"]]
        if not urls:
            problems.append(f"{label}: leafnodes.remotes[{i}] has no url")
        for url in urls:
            if not str(url).startswith("tls://"):
                problems.append(f"{label}: leafnodes.remotes[{i}] dials {url!r}, not a tls:// URL")
    # A config of each role must actually have its links, or the checks above pass vacuously.
    if role == "hub" and not ("listen" in leaf or "port" in leaf):
        problems.append(f"{label}: hub config has no leaf-node listener")
    if role == "leaf" and not remotes:
        problems.append(f"{label}: leaf config has no link to the hub")
    if cluster is None:
        problems.append(f"{label}: no cluster block (nodes would not route to each other)")
    return problems


def service_conf_problems(label: str, conf: dict[str, Any]) -> list[str]:
    """An ingest or edge config connects to NATS over TLS only (a tls:// URL makes the
    client insist on TLS and verify the server)."""
    nats = conf.get("nats")
    if not isinstance(nats, dict):
        return [f"{label}: no [nats] section"]
    problems = []
    urls = nats.get("urls")
    if not isinstance(urls, list) or not urls:
        problems.append(f"{label}: [nats] urls is empty")
    for url in urls or []:
        if not str(url).startswith("tls://"):
            problems.append(f"{label}: NATS URL {url!r} is not tls://")
    return problems


def nats_tls_problems(plan: dict, root: Path) -> list[str]:
    """Every NATS link uses TLS: client listeners, routes, the hub's leaf-node listener,
    every leaf cluster's link to the hub, and every service's NATS connection."""
    problems = []
    seen = {"hub": 0, "leaf": 0, "service": 0}
    try:
        configs = list(rendered_configs(plan, root))
    except (hcltemplate.TemplateError, AssertionError, OSError) as e:
        return [f"cannot render the configs: {e}"]
    for label, template, text in configs:
        if template.endswith(".conf.tftpl"):
            role = template.split(".")[0]
            try:
                conf = natsconf.parse(text)
            except natsconf.ConfError as e:
                problems.append(f"{label}: rendered {template} does not parse: {e}")
                continue
            seen[role if role in seen else "hub"] += 1
            problems += nats_conf_problems(label, conf, role)
        elif template.endswith(".toml.tftpl"):
            try:
                conf = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problems.append(f"{label}: rendered {template} is not TOML: {e}")
                continue
            seen["service"] += 1
            problems += service_conf_problems(label, conf)
        else:
            problems.append(f"{label}: unknown kind of config template {template}")
    for kind, count in seen.items():
        if count == 0:
            problems.append(f"no {kind} config was found to check")
    return problems


# --- security groups --------------------------------------------------------------------


def _covers(port: int, protocol: Any, from_port: Any, to_port: Any) -> bool:
    if str(protocol) in ("-1", "all"):
        return True
    if str(protocol).lower() not in ("tcp", "6"):
        return False
    try:
        return int(from_port) <= port <= int(to_port)
    except (TypeError, ValueError):
        return True  # unknown range: assume the worst


def _ingress_rules(plan: dict) -> Iterator[tuple[str, Any, Any, Any, list[str]]]:
    """(where, protocol, from, to, CIDRs) of every ingress rule, in all three spellings."""
    for sg in plan.get("aws_security_group", []):
        for i, rule in enumerate(_blocks_as_list(sg.get("ingress"))):
            cidrs = list(rule.get("cidr_blocks") or []) + list(rule.get("ipv6_cidr_blocks") or [])
            yield f"{path_of(sg)}.ingress[{i}]", rule.get("protocol"), rule.get("from_port"), rule.get("to_port"), cidrs
    for rule in plan.get("aws_security_group_rule", []):
        if rule.get("type") == "ingress":
            cidrs = list(rule.get("cidr_blocks") or []) + list(rule.get("ipv6_cidr_blocks") or [])
            yield path_of(rule), rule.get("protocol"), rule.get("from_port"), rule.get("to_port"), cidrs
    for rule in plan.get("aws_vpc_security_group_ingress_rule", []):
        cidrs = [c for c in (rule.get("cidr_ipv4"), rule.get("cidr_ipv6")) if c]
        yield path_of(rule), rule.get("ip_protocol"), rule.get("from_port"), rule.get("to_port"), cidrs


def public_nats_port_problems(plan: dict) -> list[str]:
    """No security group opens a NATS port (4222 client, 6222 cluster, 7422 leafnode, 8222
    monitoring) to the internet, and no internet-facing load balancer listens on one."""
    problems = []
    for where, protocol, from_port, to_port, cidrs in _ingress_rules(plan):
        open_to = sorted(set(cidrs) & INTERNET)
        if not open_to:
            continue
        for port, name in NATS_PORTS.items():
            if _covers(port, protocol, from_port, to_port):
                problems.append(f"{where}: opens NATS {name} port {port} to {', '.join(open_to)}")
    lbs = {lb.get("id"): lb for lb in plan.get("aws_lb", [])}
    for listener in plan.get("aws_lb_listener", []):
        lb = lbs.get(listener.get("load_balancer_arn"))
        if lb is None or lb.get("internal") is True:
            continue
        if listener.get("port") in NATS_PORTS:
            problems.append(
                f"{path_of(listener)}: internet-facing load balancer {path_of(lb)} listens on NATS port {listener['port']}"
            )
    if not lbs:
        problems.append("no load balancer found: the plan is not the one expected")
    return problems


# --------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------


def checkov_executable() -> str:
    return str(Path(sys.executable).with_name("checkov"))


def run_checkov(root: Path, checks: list[str] | None = None, directory: Path | None = None) -> dict[str, Any]:
    """Run checkov offline over `directory` (default: the whole tree) with the tree's config
    file. Returns {"returncode", "failed": [(check id, resource, file)], "passed": int}."""
    cmd = [
        checkov_executable(),
        "--directory", str(directory or root),
        "--config-file", str(root / CHECKOV_CONFIG),
        "--skip-download",
        "--output", "json",
        "--compact",
    ]
    if checks:
        cmd += ["--check", ",".join(checks)]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_EXPERIMENTAL_IMAGE_REFERENCING="False")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    reports = data if isinstance(data, list) else [data]
    failed, passed = [], 0
    for report in reports:
        passed += (report.get("summary") or {}).get("passed", 0)
        for f in (report.get("results") or {}).get("failed_checks") or []:
            failed.append((f.get("check_id"), f.get("resource"), f.get("file_path")))
    return {"returncode": proc.returncode, "failed": failed, "passed": passed, "stderr": proc.stderr}


def checkov_skips(root: Path) -> list[tuple[str, str]]:
    """(check id, the comment right above it) for every skip-check in the config file."""
    lines = (root / CHECKOV_CONFIG).read_text().splitlines()
    skips = []
    in_skip = False
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if re.match(r"^skip-check\s*:", line):
            in_skip = True
            comment = []
            continue
        if in_skip and line and not line[0].isspace() and not stripped.startswith("#"):
            in_skip = False
        if not in_skip:
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# ").strip())
        elif stripped.startswith("- "):
            item = stripped[2:].split("#", 1)
            inline = item[1].strip() if len(item) > 1 else ""
            skips.append((item[0].strip(), " ".join(comment + ([inline] if inline else []))))
            comment = []
    return skips
