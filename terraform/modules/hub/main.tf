# The hub: three (or five) NATS nodes across availability zones with JetStream domain "hub",
# their leaf-node listener behind an internal NLB that the regional leaf clusters dial over
# VPC peering, and the ingest instances that publish into it.

data "aws_partition" "current" {}

locals {
  ports    = { client = 4222, cluster = 6222, leafnode = 7422, monitoring = 8222 }
  leaf_dns = "leaf.${var.domain}.${var.internal_zone_name}"
}

module "nats" {
  source = "../nats-cluster"

  name                = var.name
  role                = "hub"
  domain              = var.domain
  hub_domain          = var.domain
  vpc_id              = var.vpc_id
  azs                 = var.azs
  subnet_ids          = var.private_subnet_ids
  instance_type       = var.nats_instance_type
  ami_id              = var.ami_id
  architecture        = var.architecture
  data_volume_size_gb = var.data_volume_size_gb
  max_file_store      = var.max_file_store
  ports               = local.ports
  internal_zone_id    = var.internal_zone_id
  internal_zone_name  = var.internal_zone_name
  tls_secret_arn      = var.tls_secret_arn
  password_secret_arns = {
    ingest = var.ingest_password_secret_arn
    oms    = var.oms_password_secret_arn
    admin  = var.admin_password_secret_arn
  }
  secrets_kms_key_arns = var.secrets_kms_key_arns
  leaf_identity        = var.leaf_identity

  client_source_security_group_ids   = merge(var.oms_client_security_group_ids, { ingest = aws_security_group.ingest.id })
  leafnode_source_security_group_ids = { leaf_nlb = aws_security_group.leaf_nlb.id }
  monitoring_cidr_blocks             = var.monitoring_cidr_blocks

  artifact_bucket     = var.artifact_bucket
  nats_server_version = var.nats_server_version
  tags                = var.tags
}

# ---------------------------------------------------------------------------------------
# Leaf-node listener behind an internal NLB. TLS passes through untouched: the hub maps
# each leaf's client certificate to the leaf user, so the NLB must not terminate it.
# ---------------------------------------------------------------------------------------

resource "aws_security_group" "leaf_nlb" {
  name_prefix = "${var.name}-leaf-nlb-"
  description = "Internal NLB in front of the hub leaf-node listener"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-leaf-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "leaf_nlb" {
  for_each = toset(var.leaf_source_cidr_blocks)

  security_group_id = aws_security_group.leaf_nlb.id
  description       = "Leaf-node links from regional VPC ${each.value}"
  ip_protocol       = "tcp"
  from_port         = local.ports.leafnode
  to_port           = local.ports.leafnode
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "leaf_nlb_to_nodes" {
  security_group_id            = aws_security_group.leaf_nlb.id
  description                  = "Leaf-node links to the hub nodes"
  ip_protocol                  = "tcp"
  from_port                    = local.ports.leafnode
  to_port                      = local.ports.leafnode
  referenced_security_group_id = module.nats.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "leaf_nlb_health" {
  security_group_id            = aws_security_group.leaf_nlb.id
  description                  = "Health checks of the hub nodes (HTTPS monitoring port)"
  ip_protocol                  = "tcp"
  from_port                    = local.ports.monitoring
  to_port                      = local.ports.monitoring
  referenced_security_group_id = module.nats.security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "nodes_health_from_nlb" {
  security_group_id            = module.nats.security_group_id
  description                  = "Health checks from the leaf-node NLB"
  ip_protocol                  = "tcp"
  from_port                    = local.ports.monitoring
  to_port                      = local.ports.monitoring
  referenced_security_group_id = aws_security_group.leaf_nlb.id
}

resource "aws_lb" "leaf" {
  name                             = "${var.name}-leaf"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = [for az in var.azs : var.private_subnet_ids[az]]
  security_groups                  = [aws_security_group.leaf_nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  tags = var.tags
}

resource "aws_lb_target_group" "leaf" {
  name                 = "${var.name}-leaf"
  port                 = local.ports.leafnode
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 60

  # A node is in service when its JetStream is (the NLB does not check the certificate).
  health_check {
    protocol            = "HTTPS"
    port                = tostring(local.ports.monitoring)
    path                = "/healthz?js-enabled-only=true"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_target_group_attachment" "leaf" {
  for_each = module.nats.instance_ids

  target_group_arn = aws_lb_target_group.leaf.arn
  target_id        = each.value
  port             = local.ports.leafnode
}

resource "aws_lb_listener" "leaf" {
  load_balancer_arn = aws_lb.leaf.arn
  port              = local.ports.leafnode
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.leaf.arn
  }

  tags = var.tags
}

resource "aws_route53_record" "leaf" {
  zone_id = var.internal_zone_id
  name    = local.leaf_dns
  type    = "A"

  alias {
    name                   = aws_lb.leaf.dns_name
    zone_id                = aws_lb.leaf.zone_id
    evaluate_target_health = true
  }
}
