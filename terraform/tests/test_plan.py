"""Plan-like assertions over the evaluated example environment (tfparse): each fails when
the property it names is broken in a copy of the tree."""

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


def test_edges_dialing_plain_nats_are_reported(broken):
    broken.edit("modules/nats-cluster/outputs.tf", '"tls://${local.node_names[az]}', '"nats://${local.node_names[az]}')
    problems = tfcheck.nats_tls_problems(broken.plan(), broken.root)
    assert any("edge_conf_vars" in p and "is not tls://" in p for p in problems), problems
    assert any("ingest_conf_vars" in p and "is not tls://" in p for p in problems), problems


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
