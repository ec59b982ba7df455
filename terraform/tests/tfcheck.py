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

# The repository around terraform/: the NATS users the templates must match, and the schema
# of the services' [nats.tls] / [nats.auth] tables. Broken copies of terraform/ are checked
# against the real ones.
REPO_DIR = TERRAFORM_DIR.parent
REPO_NATS_DIR = REPO_DIR / "nats"
SERVICE_NATS_RS = REPO_DIR / "service/src/nats.rs"

# Keys of the services' [nats.tls] and [nats.auth] tables (service/src/nats.rs, NatsTls and
# NatsAuth, deny_unknown_fields: any other key stops the service at start-up).
NATS_TLS_KEYS = {"ca_file", "cert_file", "key_file", "required"}
NATS_AUTH_KEYS = {"user", "password_file", "creds_file"}
# Which NATS user each service template connects as, and to which kind of node.
SERVICE_NATS_USERS = {"edge.toml.tftpl": ("edge", "leaf"), "ingest.toml.tftpl": ("ingest", "hub")}
# Keys that would put a secret itself into a rendered config.
SECRET_KEYS = {"password", "pass", "token", "nkey", "seed"}


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
    """An ingest or edge config connects to NATS over TLS only: [nats.tls] names the CA the
    servers are verified with (a TLS file set makes the client insist on TLS whatever the
    URL's scheme, service/src/nats.rs), and every URL is nats:// or tls://."""
    nats = conf.get("nats")
    if not isinstance(nats, dict):
        return [f"{label}: no [nats] section"]
    problems = []
    urls = nats.get("urls")
    if not isinstance(urls, list) or not urls:
        problems.append(f"{label}: [nats] urls is empty")
    for url in urls or []:
        if "://" not in str(url) or str(url).split("://", 1)[0] not in ("nats", "tls"):
            problems.append(f"{label}: NATS URL {_redacted(url)!r} is neither nats:// nor tls://")
    tls = nats.get("tls")
    if not isinstance(tls, dict) or not tls.get("ca_file"):
        problems.append(
            f"{label}: no [nats.tls] ca_file: the client would neither insist on TLS nor verify "
            "the servers with the deployment's CA"
        )
    elif tls.get("cert_file") and not tls.get("key_file"):
        problems.append(f"{label}: [nats.tls] cert_file without key_file")
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


# --- edge: client authentication and the metrics listener -------------------------------

# Where an edge config names the keys it verifies tokens with (edge/src/config.rs, AuthConfig).
EDGE_KEY_SOURCES = ("hs256_secret_file", "rsa_public_keys", "ed25519_public_keys", "jwks_file")


def _port(address: Any) -> int | None:
    try:
        return int(str(address).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def edge_conf_problems(label: str, conf: dict[str, Any]) -> list[str]:
    """One rendered edge config: tokens required (anonymous off, or limited), checked for
    audience, issuer and lifetime, and /metrics on its own port."""
    problems = []
    auth = conf.get("auth")
    if not isinstance(auth, dict):
        return [f"{label}: no [auth] section"]
    anonymous = auth.get("anonymous")
    if not isinstance(anonymous, bool):
        problems.append(f"{label}: [auth] anonymous is not set (the edge's default must not decide)")
    if auth.get("allow_open_anonymous"):
        problems.append(f"{label}: [auth] allow_open_anonymous is for development only")
    if "*" in (auth.get("anonymous_ent") or []):
        problems.append(f"{label}: [auth] anonymous_ent grants every symbol to anyone")
    for key in ("audience", "issuer"):
        if not isinstance(auth.get(key), str) or not auth[key]:
            problems.append(f"{label}: [auth] {key} is not set: tokens minted for anything else would pass")
    lifetime = auth.get("max_token_lifetime_s")
    if not isinstance(lifetime, int) or lifetime <= 0:
        problems.append(f"{label}: [auth] max_token_lifetime_s is not a positive number of seconds")
    sources = [k for k in EDGE_KEY_SOURCES if auth.get(k)]
    if len(sources) != 1:
        problems.append(f"{label}: [auth] names {len(sources)} key sources, not one: {sources}")
    metrics, listen = _port(conf.get("metrics_listen")), _port(conf.get("listen"))
    if metrics is None:
        problems.append(f"{label}: no metrics_listen: /metrics would be served on the client port")
    elif metrics == listen:
        problems.append(f"{label}: metrics_listen shares the client port {listen}")
    return problems


def edge_auth_problems(plan: dict, root: Path) -> list[str]:
    """Every edge config the instances boot with requires tokens and keeps /metrics off the
    client port."""
    problems = []
    try:
        configs = list(rendered_configs(plan, root))
    except (hcltemplate.TemplateError, AssertionError, OSError) as e:
        return [f"cannot render the configs: {e}"]
    seen = 0
    for label, template, text in configs:
        if template != "edge.toml.tftpl":
            continue
        seen += 1
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{label}: rendered {template} is not TOML: {e}")
            continue
        problems += edge_conf_problems(label, conf)
    if seen == 0:
        problems.append("no config rendered from edge.toml.tftpl was found to check")
    return problems


# --- NATS credentials of the services ---------------------------------------------------


def _redacted(url: Any) -> str:
    """A URL with the password of its user info (if any) replaced, for problem messages."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", str(url))


def _secret_keys(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else key
            if key.lower() in SECRET_KEYS:
                yield here
            yield from _secret_keys(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _secret_keys(item, f"{where}[{i}]")


def _password_users(conf: dict[str, Any]) -> set[str]:
    users = (conf.get("authorization") or {}).get("users") or []
    return {u.get("user") for u in users if isinstance(u, dict) and u.get("password")}


def service_credential_problems(plan: dict, root: Path) -> list[str]:
    """Every edge and ingest config names its NATS credentials the way service/src/nats.rs reads
    them: [nats.auth] user and password_file (the password is a file written at boot), with a
    user the nodes it dials know. No URL carries credentials, and no password, token or seed
    is in a rendered config."""
    problems = []
    try:
        configs = list(rendered_configs(plan, root))
    except (hcltemplate.TemplateError, AssertionError, OSError) as e:
        return [f"cannot render the configs: {e}"]
    users_of: dict[str, set[str]] = {"hub": set(), "leaf": set()}
    for label, template, text in configs:
        role = template.split(".")[0]
        if template.endswith(".conf.tftpl") and role in users_of:
            try:
                users_of[role] |= _password_users(natsconf.parse(text))
            except natsconf.ConfError as e:
                problems.append(f"{label}: rendered {template} does not parse: {e}")
    seen = {name: 0 for name in SERVICE_NATS_USERS}
    for label, template, text in configs:
        if template not in SERVICE_NATS_USERS:
            continue
        user, role = SERVICE_NATS_USERS[template]
        try:
            conf = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"{label}: rendered {template} is not TOML: {e}")
            continue
        seen[template] += 1
        for key in _secret_keys(conf, ""):
            problems.append(f"{label}: {key} puts a secret in the config; it belongs in a file written at boot")
        nats = conf.get("nats") if isinstance(conf.get("nats"), dict) else {}
        for url in nats.get("urls") or []:
            if "@" in str(url).split("://", 1)[-1].split("/", 1)[0]:
                problems.append(f"{label}: NATS URL {_redacted(url)!r} carries credentials; use [nats.auth]")
        for table, known in (("tls", NATS_TLS_KEYS), ("auth", NATS_AUTH_KEYS)):
            section = nats.get(table)
            if isinstance(section, dict):
                for key in sorted(set(section) - known):
                    problems.append(f"{label}: [nats.{table}] {key} is not a setting of service/src/nats.rs (refused at start-up)")
        auth = nats.get("auth")
        if not isinstance(auth, dict):
            problems.append(f"{label}: no [nats.auth]: the service would connect without credentials")
            continue
        if auth.get("user") != user:
            problems.append(f"{label}: [nats.auth] user is {auth.get('user')!r}, not {user!r}")
        elif user not in users_of[role]:
            problems.append(f"{label}: NATS user {user!r} is not a password user of the {role} nodes")
        password_file = auth.get("password_file")
        if not password_file:
            problems.append(f"{label}: [nats.auth] has no password_file for user {auth.get('user')!r}")
        elif not str(password_file).startswith("/"):
            problems.append(f"{label}: [nats.auth] password_file {password_file!r} is not an absolute path")
        if auth.get("creds_file"):
            problems.append(f"{label}: [nats.auth] sets creds_file beside user and password_file")
    for template, count in seen.items():
        if count == 0:
            problems.append(f"no config rendered from {template} was found to check")
    return problems


def service_nats_schema(path: Path = SERVICE_NATS_RS) -> dict[str, set[str]]:
    """Field names of NatsTls and NatsAuth in service/src/nats.rs."""
    text = path.read_text()
    schema = {}
    for struct in ("NatsTls", "NatsAuth"):
        m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", text, re.S)
        if not m:
            raise AssertionError(f"{path}: no struct {struct}")
        schema[struct] = set(re.findall(r"^\s*pub (\w+):", m.group(1), re.M))
    return schema


# --- NATS users and their permissions ----------------------------------------------------


def _parse_without_includes(path: Path) -> dict[str, Any]:
    """A repository NATS config, its `include` lines left out (they would be duplicate keys)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("include ")]
    return natsconf.parse("\n".join(lines))


def _resolve(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$") and value[1:] in variables:
        return _resolve(variables[value[1:]], variables)
    if isinstance(value, dict):
        return {k: _resolve(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, variables) for v in value]
    return value


def _subjects(value: Any) -> frozenset[str]:
    return frozenset([value] if isinstance(value, str) else value or [])


def normalized_permissions(permissions: Any) -> dict[str, dict[str, frozenset[str] | None]]:
    """{publish|subscribe: {allow, deny}}; allow None means everything (no allow list)."""
    out = {}
    permissions = permissions if isinstance(permissions, dict) else {}
    for kind in ("publish", "subscribe"):
        value = permissions.get(kind)
        if isinstance(value, dict):
            allow = _subjects(value["allow"]) if "allow" in value else None
            out[kind] = {"allow": allow, "deny": _subjects(value.get("deny"))}
        elif value is None:
            out[kind] = {"allow": None, "deny": frozenset()}
        else:
            out[kind] = {"allow": _subjects(value), "deny": frozenset()}
    return out


def repo_nats_users(nats_dir: Path = REPO_NATS_DIR) -> dict[str, dict[str, Any]]:
    """The repository's users (nats/include/*.conf) by kind of node, {name: permissions};
    the regions' leaf-node link is named `leaf`."""
    variables = _parse_without_includes(nats_dir / "include/permissions.conf")
    out = {}
    for role, file in (("hub", "hub-users.conf"), ("leaf", "region-users.conf")):
        users = _resolve(_parse_without_includes(nats_dir / "include" / file), variables)["authorization"]["users"]
        out[role] = {
            ("leaf" if u["user"] == "$TICKMESH_NATS_LEAF_USER" else u["user"]): normalized_permissions(u.get("permissions"))
            for u in users
        }
    return out


def repo_leaf_deny_exports(nats_dir: Path = REPO_NATS_DIR) -> list[str]:
    """deny_exports of the link to the hub in nats/leaf.conf (hub domain "hub")."""
    return _parse_without_includes(nats_dir / "leaf.conf")["leafnodes"]["remotes"][0]["deny_exports"]


# Users each kind of node has in the templates. The hub has no edge user: edges connect to
# their region's leaf nodes only.
TEMPLATE_USERS = {"hub": {"ingest", "oms", "admin", "leaf"}, "leaf": {"edge", "admin"}}
# What each user must never be allowed, whatever else changes: {user: {publish|subscribe:
# [subject]}}, "{hub}" standing for the hub's JetStream domain. A leaf link injects no tick,
# control message or KV write, and changes, deletes, steps down or removes nothing in the
# hub's JetStream (nor a usage record into it); an edge makes no stream or bucket but the
# usage stream of its own domain, and deletes or purges none; no user but oms appends
# an account event or writes an account snapshot, and oms purges or deletes nothing; no
# user but admin (who subscribes to everything) reads another user's replies.
MUST_NEVER = {
    "leaf": {
        "publish": [
            "md.0.AAPL", "ctl.revoke", "$KV.md_last.AAPL", "$JS.API.INFO", "$JS.API.STREAM.DELETE.KV_md_last",
            "$JS.{hub}.API.STREAM.CREATE.KV_md_last", "$JS.{hub}.API.STREAM.UPDATE.KV_md_last",
            "$JS.{hub}.API.STREAM.DELETE.KV_md_last", "$JS.{hub}.API.STREAM.PURGE.KV_md_last",
            "$JS.{hub}.API.STREAM.MSG.DELETE.KV_md_last", "$JS.{hub}.API.META.LEADER.STEPDOWN",
            "$JS.{hub}.API.SERVER.REMOVE", "$JS.{hub}.API.STREAM.LEADER.STEPDOWN.KV_md_last",
            "$JS.{hub}.API.STREAM.PEER.REMOVE.KV_md_last", "$JS.{hub}.API.CONSUMER.DELETE.KV_md_last.c",
            "$JS.{hub}.API.CONSUMER.LEADER.STEPDOWN.KV_md_last.c", "$JS.{hub}.API.ACCOUNT.PURGE.x",
            "acct.DEMO1.fill", "$KV.acct_snap.DEMO1", "$JS.{hub}.API.STREAM.UPDATE.acct",
            "$JS.{hub}.API.STREAM.PURGE.acct", "$JS.{hub}.API.STREAM.MSG.DELETE.acct",
            "$JS.{hub}.API.CONSUMER.DELETE.acct.c", "$JS.{hub}.API.STREAM.DELETE.KV_acct_snap",
            "acctlive.DEMO1.fill", "mdd.0.AAPL", "$JS.{hub}.API.STREAM.PURGE.md_delayed",
            "$JS.{hub}.API.STREAM.PURGE.md_delayed_tape",
            "usage.2026-12.edge-1.1", "$JS.{hub}.API.STREAM.CREATE.usage",
        ],
        "subscribe": ["_INBOX.x", "_INBOX_ingest.x", "_INBOX_admin.x", "_INBOX_oms.x", "acct.DEMO1.fill"],
    },
    "edge": {
        "publish": [
            "md.0.AAPL", "ctl.revoke", "$KV.md_last.AAPL", "$KV.md_ref.x",
            "$JS.API.STREAM.CREATE.KV_md_last", "$JS.{hub}.API.STREAM.CREATE.KV_md_last",
            "$JS.region.API.STREAM.CREATE.KV_md_last", "$JS.API.STREAM.CREATE.KV_x",
            "$JS.API.STREAM.DELETE.KV_md_last", "$JS.region.API.STREAM.DELETE.KV_md_last",
            "$JS.API.STREAM.UPDATE.KV_md_last", "$JS.API.STREAM.PURGE.KV_md_last",
            "$JS.API.CONSUMER.DELETE.KV_md_last.c", "$JS.API.META.LEADER.STEPDOWN", "$JS.API.SERVER.REMOVE",
            "acct.DEMO1.fill", "$KV.acct_snap.DEMO1", "$JS.{hub}.API.STREAM.CREATE.acct",
            "$JS.{hub}.API.STREAM.UPDATE.acct", "$JS.{hub}.API.STREAM.PURGE.acct",
            "$JS.{hub}.API.STREAM.MSG.DELETE.acct", "$JS.{hub}.API.STREAM.DELETE.KV_acct_snap",
            "acctlive.DEMO1.fill", "mdd.0.AAPL", "$JS.{hub}.API.STREAM.PURGE.md_delayed",
            "$JS.{hub}.API.STREAM.CREATE.md_delayed",
            "$JS.{hub}.API.STREAM.CREATE.md_delayed_tape", "$JS.{hub}.API.STREAM.PURGE.md_delayed_tape",
            "$JS.{hub}.API.STREAM.CREATE.usage", "$JS.API.STREAM.DELETE.usage",
            "$JS.API.STREAM.PURGE.usage", "$JS.API.STREAM.UPDATE.usage", "$JS.API.STREAM.MSG.DELETE.usage",
        ],
        "subscribe": ["_INBOX.x", "_INBOX_ingest.x", "_INBOX_admin.x", "_INBOX_oms.x", "acct.DEMO1.fill", "mdd.0.AAPL"],
    },
    "ingest": {
        "publish": [
            "ctl.revoke", "$JS.API.STREAM.DELETE.KV_md_last", "$JS.API.STREAM.PURGE.KV_md_last", "$JS.API.META.LEADER.STEPDOWN",
            "acct.DEMO1.fill", "$KV.acct_snap.DEMO1", "$JS.API.STREAM.INFO.acct", "$JS.API.CONSUMER.CREATE.acct",
            "$JS.API.DIRECT.GET.acct", "$JS.API.DIRECT.GET.KV_acct_snap.$KV.acct_snap.DEMO1",
            "acctlive.DEMO1.fill",
        ],
        "subscribe": ["ctl.revoke", "_INBOX.x", "_INBOX_edge.x", "_INBOX_oms.x", "acct.DEMO1.fill", "acctlive.DEMO1.fill"],
    },
    "oms": {
        "publish": [
            "md.0.AAPL", "tr.0.AAPL", "bar.1m.0.AAPL", "ctl.revoke", "$KV.md_last.AAPL", "$KV.ctl_revoked.x",
            "$JS.API.STREAM.DELETE.acct", "$JS.API.STREAM.PURGE.acct", "$JS.API.STREAM.MSG.DELETE.acct",
            "$JS.API.STREAM.DELETE.KV_acct_snap", "$JS.API.STREAM.PURGE.KV_acct_snap",
            "$JS.API.STREAM.CREATE.md_trades", "$JS.API.STREAM.INFO.KV_md_last", "$JS.API.CONSUMER.CREATE.md_trades",
            "$JS.API.META.LEADER.STEPDOWN", "$JS.API.STREAM.LEADER.STEPDOWN.acct", "$JS.API.STREAM.PEER.REMOVE.acct",
            "acctlive.DEMO1.fill", "mdd.0.AAPL",
        ],
        "subscribe": ["md.0.AAPL", "ctl.revoke", "_INBOX.x", "_INBOX_edge.x", "_INBOX_ingest.x", "_INBOX_admin.x"],
    },
    "admin": {"publish": ["md.0.AAPL", "mdd.0.AAPL", "$KV.md_last.AAPL", "acct.DEMO1.fill", "$KV.acct_snap.DEMO1"], "subscribe": []},
}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may(part: dict, subject: str) -> bool:
    """Whether a normalized publish or subscribe permission lets `subject` through."""
    allowed = part["allow"] is None or any(subject_matches(p, subject) for p in part["allow"])
    return allowed and not any(subject_matches(p, subject) for p in part["deny"])


def forbidden_problems(where: str, users: dict, hub_domain: Any) -> list[str]:
    """Every MUST_NEVER subject of each user in `users` ({name: normalized permissions})."""
    problems = []
    for name, perms in sorted(users.items()):
        for kind, subjects in MUST_NEVER.get(name, {}).items():
            for subject in subjects:
                subject = subject.replace("{hub}", str(hub_domain))
                if may(perms[kind], subject):
                    problems.append(f"{where}: the {name} user may {kind} {subject}")
    return problems


def repo_forbidden_problems(nats_dir: Path = REPO_NATS_DIR) -> list[str]:
    """MUST_NEVER against the repository's own users (nats/hub.conf's domain is "hub")."""
    problems = []
    for role, users in repo_nats_users(nats_dir).items():
        problems += forbidden_problems(f"nats/include ({role})", users, "hub")
    return problems


def _in_domain(permissions: dict, domain: Any) -> dict:
    """The repository's leaf user names the hub's JetStream domain "hub"; a rendered hub
    names its own."""
    def swap(subjects):
        if subjects is None:
            return None
        return frozenset(s.replace("$JS.hub.", f"$JS.{domain}.") for s in subjects)

    return {kind: {part: swap(v) for part, v in p.items()} for kind, p in permissions.items()}


def _describe(p: dict) -> str:
    parts = []
    for kind in ("publish", "subscribe"):
        for part in ("allow", "deny"):
            subjects = p[kind][part]
            if subjects is None:
                parts.append(f"{kind} {part} everything")
            elif subjects:
                parts.append(f"{kind} {part} {sorted(subjects)}")
    return "; ".join(parts)


def nats_permission_problems(plan: dict, root: Path, nats_dir: Path = REPO_NATS_DIR) -> list[str]:
    """The users of the rendered hub and leaf configs are the repository's least-privilege
    users (nats/include/*.conf), subject for subject; the hub's leaf user denies ticks,
    control messages, KV writes and stream changes; each region's link to the hub keeps
    them out of the link (deny_exports of nats/leaf.conf)."""
    problems = []
    expected = repo_nats_users(nats_dir)
    try:
        inputs = list(config_inputs(plan, root))
    except (AssertionError, OSError) as e:
        return [f"cannot find the configs: {e}"]
    seen = {"hub": 0, "leaf": 0}
    for label, template, variables in inputs:
        role = template.name.split(".")[0]
        if not template.name.endswith(".conf.tftpl") or role not in seen:
            continue
        try:
            conf = natsconf.parse(hcltemplate.render(template.read_text(), variables))
        except (hcltemplate.TemplateError, natsconf.ConfError) as e:
            problems.append(f"{label}: cannot render or parse {template.name}: {e}")
            continue
        seen[role] += 1
        users = {}
        for u in (conf.get("authorization") or {}).get("users") or []:
            name = "leaf" if role == "hub" and u.get("user") == variables.get("leaf_identity") else u.get("user")
            users[name] = normalized_permissions(u.get("permissions"))
        if set(users) != TEMPLATE_USERS[role]:
            problems.append(f"{label}: users {sorted(users)}, expected {sorted(TEMPLATE_USERS[role])}")
        for name, perms in sorted(users.items()):
            want = expected[role].get(name)
            if want is not None and role == "hub" and name == "leaf":
                want = _in_domain(want, variables.get("domain"))
            if want is None:
                problems.append(f"{label}: user {name!r} is not in nats/include ({role})")
            elif perms != want:
                problems.append(f"{label}: user {name!r} may {_describe(perms)}; nats/include says {_describe(want)}")
        hub_domain = variables.get("domain") if role == "hub" else variables.get("hub_domain")
        problems += forbidden_problems(label, users, hub_domain)
        if role == "leaf":
            hub = variables.get("hub_domain")
            want_exports = sorted(s.replace("$JS.hub.", f"$JS.{hub}.") for s in repo_leaf_deny_exports(nats_dir))
            for i, remote in enumerate((conf.get("leafnodes") or {}).get("remotes") or []):
                got = sorted(remote.get("deny_exports") or [])
                if got != want_exports:
                    problems.append(f"{label}: leafnodes.remotes[{i}] deny_exports {got}, nats/leaf.conf has {want_exports}")
    for role, count in seen.items():
        if count == 0:
            problems.append(f"no {role} NATS config was found to check")
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
