"""Plan-like assertions over the evaluated example environment (tfparse): each fails when
the property it names is broken in a copy of the tree."""

import shutil

import pytest

import tfcheck

REGION_MODULE = "envs/example/region_eu_west_1.tf"


# --- every region has an edge group per AZ ---------------------------------------------


def test_example_has_three_regions_with_an_edge_group_per_az(plan):
    regions = tfcheck.module_instances(plan, "region")
    assert sorted(r["domain"] for r in regions) == ["ap-northeast-1", "eu-west-1", "us-east-1"]
    assert tfcheck.edge_group_problems(plan) == []
    edge_groups = [g for g in plan["aws_autoscaling_group"] if ".aws_autoscaling_group.edge[" in tfcheck.path_of(g)]
    assert len(edge_groups) == sum(len(r["azs"]) for r in regions)


def test_missing_edge_group_in_an_az_is_reported(broken):
    broken.edit(
        "modules/region/edge.tf",
        'resource "aws_autoscaling_group" "edge" {\n  for_each = toset(var.azs)',
        'resource "aws_autoscaling_group" "edge" {\n  for_each = toset(slice(var.azs, 1, length(var.azs)))',
    )
    problems = tfcheck.edge_group_problems(broken.plan())
    assert "module.region_eu_west_1: no edge Auto Scaling group in eu-west-1a" in problems, problems
    assert len([p for p in problems if "no edge Auto Scaling group" in p]) == 3, problems


def test_region_added_without_edges_is_reported(broken):
    # A fourth region, added the documented way, whose edge groups cover two of its three zones.
    text = (broken.root / REGION_MODULE).read_text().replace("eu_west_1", "eu_central_1").replace("eu-west-1", "eu-central-1")
    text = text.replace('var.edge_capacity["eu-central-1"]', "{ min = 2, max = 4, desired = 2 }")
    (broken.root / "envs/example/region_eu_central_1.tf").write_text(text)
    broken.edit(
        "envs/example/main.tf",
        '    "ap-northeast-1" = { cidr_block',
        '    "eu-central-1"   = { cidr_block = "10.4.0.0/16", azs = ["eu-central-1a", "eu-central-1b", "eu-central-1c"] }\n    "ap-northeast-1" = { cidr_block',
    )
    broken.append("envs/example/providers.tf", '\nprovider "aws" {\n  alias  = "eu_central_1"\n  region = "eu-central-1"\n}\n')
    broken.edit(
        "modules/region/edge.tf",
        'resource "aws_autoscaling_group" "edge" {\n  for_each = toset(var.azs)',
        'resource "aws_autoscaling_group" "edge" {\n  for_each = toset([for az in var.azs : az if az != "eu-central-1c"])',
    )
    plan = broken.plan()
    assert len(tfcheck.module_instances(plan, "region")) == 4
    problems = tfcheck.edge_group_problems(plan)
    assert problems == ["module.region_eu_central_1: no edge Auto Scaling group in eu-central-1c"], problems


def test_edge_group_that_may_scale_to_zero_is_reported(broken):
    broken.edit("modules/region/edge.tf", "  min_size                  = var.edge_capacity.min", "  min_size                  = 0")
    problems = tfcheck.edge_group_problems(broken.plan())
    assert any("has min_size 0" in p for p in problems), problems


def test_edge_group_outside_the_nlb_is_reported(broken):
    broken.edit("modules/region/edge.tf", "  target_group_arns         = [aws_lb_target_group.edge.arn]\n", "")
    problems = tfcheck.edge_group_problems(broken.plan())
    assert any("not attached to the NLB target group" in p for p in problems), problems


# --- every NATS link uses TLS ----------------------------------------------------------


def test_every_nats_link_uses_tls(plan, tree):
    labels = [label for label, _, _ in tfcheck.rendered_configs(plan, tree)]
    # 3 hub nodes, 3 leaf nodes in each of 3 regions, one ingest group, 9 edge groups.
    assert len(labels) == 3 + 9 + 1 + 9, labels
    assert tfcheck.nats_tls_problems(plan, tree) == []


def test_leaf_link_over_plain_nats_is_reported(broken):
    broken.edit("modules/hub/outputs.tf", 'value       = ["tls://${local.leaf_dns}', 'value       = ["nats://${local.leaf_dns}')
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("leafnodes.remotes[0] dials 'nats://leaf.hub.tickmesh.internal:7422'" in p for p in problems), problems


def test_leaf_link_without_tls_block_is_reported(broken):
    broken.edit(
        "templates/leaf.conf.tftpl",
        '      ]\n      tls {\n        cert_file: "${tls_dir}/server.pem"\n        key_file: "${tls_dir}/server-key.pem"\n        ca_file: "${tls_dir}/ca.pem"\n        timeout: 5\n      }\n',
        "      ]\n",
    )
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("leafnodes.remotes[0] has no tls block" in p for p in problems), problems


def test_leaf_config_without_hub_link_is_reported(broken):
    start = "leafnodes {\n  reconnect"
    text = (broken.root / "templates/leaf.conf.tftpl").read_text()
    assert start in text
    (broken.root / "templates/leaf.conf.tftpl").write_text(text[: text.index(start)])
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("leaf config has no link to the hub" in p for p in problems), problems


def test_cluster_routes_without_tls_are_reported(broken):
    broken.edit(
        "templates/hub.conf.tftpl",
        '  ]\n  tls {\n    cert_file: "${tls_dir}/server.pem"\n    key_file: "${tls_dir}/server-key.pem"\n    ca_file: "${tls_dir}/ca.pem"\n    verify: true\n    timeout: 3\n  }\n',
        "  ]\n",
    )
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("cluster has no tls block" in p and "module.hub.module.nats" in p for p in problems), problems


def test_leafnode_listener_without_client_verification_is_reported(broken):
    broken.edit("templates/hub.conf.tftpl", "    verify_and_map: true\n", "")
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("leafnodes listener does not verify" in p for p in problems), problems


def test_services_without_a_nats_ca_are_reported(broken):
    # nats:// URLs are fine only because [nats.tls] makes the client insist on TLS.
    for template in ("templates/edge.toml.tftpl", "templates/ingest.toml.tftpl"):
        broken.edit(template, 'ca_file = "${nats_ca_file}"\n', "")
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "no [nats.tls] ca_file" in p for p in problems), problems
    assert any("ingest_conf_vars" in p and "no [nats.tls] ca_file" in p for p in problems), problems


def test_services_dialing_another_scheme_are_reported(broken):
    broken.edit("modules/nats-cluster/outputs.tf", '"nats://${local.node_names[az]}', '"ws://${local.node_names[az]}')
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "is neither nats:// nor tls://" in p for p in problems), problems


# --- edge and ingest credentials: [nats.auth], never in a URL or a config ------------------


def test_services_name_their_nats_credentials_in_nats_auth(plan, tree):
    assert tfcheck.service_credential_problems(plan, tree) == []


def test_service_config_keys_follow_the_service_schema():
    assert tfcheck.service_nats_schema() == {"NatsTls": tfcheck.NATS_TLS_KEYS, "NatsAuth": tfcheck.NATS_AUTH_KEYS}


def test_service_schema_change_is_noticed(tmp_path):
    changed = tmp_path / "nats.rs"
    changed.write_text(tfcheck.SERVICE_NATS_RS.read_text().replace("pub password_file:", "pub password_path:"))
    assert tfcheck.service_nats_schema(changed)["NatsAuth"] != tfcheck.NATS_AUTH_KEYS


def test_credentials_in_a_nats_url_are_reported(broken):
    broken.edit("modules/nats-cluster/outputs.tf", '"nats://${local.node_names[az]}', '"nats://svc:s3cret@${local.node_names[az]}')
    problems = tfcheck.service_credential_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "carries credentials" in p for p in problems), problems
    assert any("ingest_conf_vars" in p and "carries credentials" in p for p in problems), problems
    assert not any("s3cret" in p for p in problems), "a problem message repeats the password"


def test_service_without_password_file_is_reported(broken):
    broken.edit("templates/edge.toml.tftpl", 'password_file = "${nats_password_file}"\n', "")
    problems = tfcheck.service_credential_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "[nats.auth] has no password_file" in p for p in problems), problems


def test_service_without_nats_auth_is_reported(broken):
    broken.edit("templates/ingest.toml.tftpl", '[nats.auth]\nuser = "ingest"\npassword_file = "${nats_password_file}"\n', "")
    problems = tfcheck.service_credential_problems(broken.plan(), broken.root)
    assert any("ingest_conf_vars" in p and "no [nats.auth]" in p for p in problems), problems


def test_password_in_a_service_config_is_reported(broken):
    broken.edit("templates/ingest.toml.tftpl", 'password_file = "${nats_password_file}"', 'password = "s3cret"')
    problems = tfcheck.service_credential_problems(broken.plan(), broken.root)
    assert any("ingest_conf_vars" in p and "nats.auth.password puts a secret in the config" in p for p in problems), problems
    assert any("[nats.auth] password is not a setting of service/src/nats.rs" in p for p in problems), problems


def test_service_user_unknown_to_its_nodes_is_reported(broken):
    broken.edit("templates/leaf.conf.tftpl", '{ user: "edge", password: $EDGE_PASSWORD', '{ user: "edge-gw", password: $EDGE_PASSWORD')
    problems = tfcheck.service_credential_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "NATS user 'edge' is not a password user of the leaf nodes" in p for p in problems), problems


# --- NATS users: the repository's least-privilege permissions ---------------------------


def test_nats_users_match_the_repository(plan, tree):
    assert tfcheck.nats_permission_problems(plan, tree) == []


def test_repository_users_are_refused_what_they_must_never_do():
    assert tfcheck.repo_forbidden_problems() == []


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('"$JS.*.API.STREAM.DELETE.>"', "the edge user may publish $JS.region.API.STREAM.DELETE.KV_md_last"),
        ('"acct.*.*"', "the edge user may publish acct.DEMO1.fill"),
    ],
    ids=["stream-delete", "account-events"],
)
def test_repository_user_allowed_too_much_is_reported(tmp_path, extra, expected):
    nats = tmp_path / "nats"
    shutil.copytree(tfcheck.REPO_NATS_DIR, nats)
    conf = nats / "include/permissions.conf"
    text = conf.read_text()
    assert '  "$JS.FC.>",\n' in text, "update this test"
    conf.write_text(text.replace('  "$JS.FC.>",\n', f'  "$JS.FC.>", {extra},\n', 1))
    problems = tfcheck.repo_forbidden_problems(nats)
    assert any(expected in p for p in problems), problems


LEAF_PUBLISH_START = '"$JS.${domain}.API.INFO", "$JS.FC.>",'


@pytest.mark.parametrize(
    "extra, expected",
    [
        ('"md.>"', "may publish md.0.AAPL"),
        ('"$JS.${domain}.API.>"', "may publish $JS.hub.API.STREAM.DELETE.KV_md_last"),
        ('"$JS.${domain}.API.CONSUMER.DELETE.>"', "may publish $JS.hub.API.CONSUMER.DELETE.KV_md_last.c"),
        ('"$JS.${domain}.API.META.>"', "may publish $JS.hub.API.META.LEADER.STEPDOWN"),
        ('"$JS.${domain}.API.STREAM.PEER.REMOVE.*"', "may publish $JS.hub.API.STREAM.PEER.REMOVE.KV_md_last"),
        ('"acct.>"', "may publish acct.DEMO1.fill"),
        ('"$JS.${domain}.API.STREAM.PURGE.acct"', "may publish $JS.hub.API.STREAM.PURGE.acct"),
    ],
    ids=["ticks", "whole-js-api", "consumer-delete", "meta-stepdown", "peer-remove", "account-events", "account-purge"],
)
def test_hub_leaf_user_allowed_too_much_is_reported(broken, extra, expected):
    broken.edit("templates/hub.conf.tftpl", LEAF_PUBLISH_START, f"{LEAF_PUBLISH_START} {extra},")
    problems = tfcheck.nats_permission_problems(broken.plan(), broken.root)
    hub_nodes = [p for p in problems if "module.hub.module.nats" in p and f"the leaf user {expected}" in p]
    assert len(hub_nodes) == 3, problems


def test_hub_leaf_user_reading_other_replies_is_reported(broken):
    broken.edit("templates/hub.conf.tftpl", '"_INBOX_edge.>", "$JS.M.>"', '"_INBOX.>", "_INBOX_edge.>", "$JS.M.>"')
    problems = tfcheck.nats_permission_problems(broken.plan(), broken.root)
    assert any("the leaf user may subscribe _INBOX.x" in p for p in problems), problems


@pytest.mark.parametrize(
    "template, old, new, expected",
    [
        ("templates/hub.conf.tftpl", '"md.>", "ctl.alive", "$JS.API.INFO",', '"md.>", "ctl.alive", "$JS.API.>",', "user 'ingest' may"),
        ("templates/leaf.conf.tftpl", 'subscribe: ["md.>", "ctl.>", "_INBOX_edge.>", "tr.>", "bar.>", "acctlive.>"]', 'subscribe: [">"]', "user 'edge' may"),
        ("templates/leaf.conf.tftpl", '"$JS.API.INFO", "$JS.*.API.INFO",', '"$JS.API.INFO", "$JS.*.API.INFO", "md.>",', "user 'edge' may"),
        ("templates/hub.conf.tftpl", 'publish: ["ctl.>", "$JS.API.>"', 'publish: ["md.>", "ctl.>", "$JS.API.>"', "user 'admin' may"),
        ("templates/hub.conf.tftpl", '"acct.>", "$JS.API.INFO", "$JS.FC.>",', '"acct.>", "$JS.API.>", "$JS.FC.>",', "user 'oms' may"),
        ("templates/hub.conf.tftpl", 'subscribe: ["tr.>", "_INBOX_oms.>"]', 'subscribe: ["tr.>", "_INBOX.>"]', "user 'oms' may"),
        ("templates/leaf.conf.tftpl", '"$JS.API.INFO", "$JS.*.API.INFO",', '"$JS.API.INFO", "$JS.*.API.INFO", "acct.>",', "user 'edge' may"),
    ],
    ids=[
        "ingest-whole-js-api", "edge-subscribes-everything", "edge-publishes-ticks", "admin-publishes-ticks",
        "oms-whole-js-api", "oms-reads-other-replies", "edge-appends-account-events",
    ],
)
def test_permissions_wider_than_the_repository_are_reported(broken, template, old, new, expected):
    broken.edit(template, old, new)
    problems = tfcheck.nats_permission_problems(broken.plan(), broken.root)
    assert any(expected in p and "nats/include says" in p for p in problems), problems


def test_extra_nats_user_is_reported(broken):
    broken.edit(
        "templates/leaf.conf.tftpl",
        "  users: [\n",
        '  users: [\n    { user: "debug", password: $ADMIN_PASSWORD, permissions: { publish: ">", subscribe: ">" } }\n',
    )
    problems = tfcheck.nats_permission_problems(broken.plan(), broken.root)
    assert any("user 'debug' is not in nats/include (leaf)" in p for p in problems), problems


@pytest.mark.parametrize(
    "exported",
    ['"md.>", ', '"mdd.>", ', '"acct.>", ', '"acctlive.>", ', '"usage.>", '],
    ids=["ticks", "delayed-samples", "account-events", "live-account-events", "usage-records"],
)
def test_leaf_link_exporting_ticks_or_account_events_is_reported(broken, exported):
    line = '        "md.>", "mdd.>", "tr.>", "bar.>", "ctl.>", "acct.>", "acctlive.>", "usage.>", "$KV.>",\n'
    broken.edit("templates/leaf.conf.tftpl", line, line.replace(exported, ""))
    problems = tfcheck.nats_permission_problems(broken.plan(), broken.root)
    assert any("leafnodes.remotes[0] deny_exports" in p for p in problems), problems


# --- no security group opens NATS ports to the internet --------------------------------


def test_no_nats_port_is_open_to_the_internet(plan):
    assert tfcheck.public_nats_port_problems(plan) == []


OPEN_4222 = '''
resource "aws_vpc_security_group_ingress_rule" "debug_nats" {
  security_group_id = module.leaf.security_group_id
  description       = "debugging"
  ip_protocol       = "tcp"
  from_port         = 4222
  to_port           = 4222
  cidr_ipv4         = "0.0.0.0/0"
}
'''

OPEN_7422_INLINE = '''
resource "aws_security_group" "debug_leaf" {
  name        = "debug-leaf"
  description = "debugging"
  vpc_id      = var.vpc_id

  ingress {
    description = "leaf links from anywhere"
    from_port   = 7000
    to_port     = 8000
    protocol    = "tcp"
    cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
  }
}
'''

OPEN_ALL_IPV6 = '''
resource "aws_security_group_rule" "debug_all" {
  type              = "ingress"
  security_group_id = module.nats.security_group_id
  description       = "debugging"
  from_port         = 0
  to_port           = 0
  protocol          = "-1"
  ipv6_cidr_blocks  = ["::/0"]
}
'''


@pytest.mark.parametrize(
    "module, snippet, expected",
    [
        ("region", OPEN_4222, "aws_vpc_security_group_ingress_rule.debug_nats: opens NATS client port 4222 to 0.0.0.0/0"),
        ("hub", OPEN_7422_INLINE, "aws_security_group.debug_leaf.ingress[0]: opens NATS leafnode port 7422 to 0.0.0.0/0"),
        ("hub", OPEN_ALL_IPV6, "aws_security_group_rule.debug_all: opens NATS client port 4222 to ::/0"),
    ],
    ids=["vpc-ingress-rule-4222", "inline-ingress-7422-range", "sg-rule-all-protocols-ipv6"],
)
def test_nats_port_open_to_the_internet_is_reported(broken, module, snippet, expected):
    broken.append(f"modules/{module}/main.tf", snippet)
    problems = tfcheck.public_nats_port_problems(broken.plan())
    assert any(p.endswith(expected) for p in problems), problems


def test_client_cidrs_of_the_internet_on_a_nats_port_are_reported(broken):
    # The edge NLB accepts the internet on 443; moving its listener to 4222 must be caught.
    broken.edit("modules/region/edge.tf", "  port              = 443\n", "  port              = 4222\n")
    broken.edit("modules/region/security.tf", "  from_port         = 443\n  to_port           = 443\n  cidr_ipv4         = each.value", "  from_port         = 4222\n  to_port           = 4222\n  cidr_ipv4         = each.value")
    problems = tfcheck.public_nats_port_problems(broken.plan())
    assert any("internet-facing load balancer" in p and "4222" in p for p in problems), problems
    assert any("edge_nlb_clients" in p and "port 4222 to 0.0.0.0/0" in p for p in problems), problems


def test_leaf_node_listener_on_a_public_nlb_is_reported(broken):
    broken.edit("modules/hub/main.tf", "  internal                         = true\n", "  internal                         = false\n")
    problems = tfcheck.public_nats_port_problems(broken.plan())
    assert any("module.hub.aws_lb_listener.leaf: internet-facing load balancer" in p for p in problems), problems
