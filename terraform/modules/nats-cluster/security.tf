# What may reach a NATS node: its peers on the route port, the listed clients on the client
# port, (hub) the internal NLB on the leafnode port, and monitoring from private ranges.
# What a node may reach: its peers, (leaf) the hub's leafnode listener, and HTTPS for AWS
# APIs and artifacts.

resource "aws_security_group" "nats" {
  name_prefix = "${var.name}-nats-"
  description = "NATS ${var.role} nodes of ${var.name}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-nats" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "routes" {
  security_group_id            = aws_security_group.nats.id
  description                  = "NATS cluster routes between nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.cluster
  to_port                      = var.ports.cluster
  referenced_security_group_id = aws_security_group.nats.id
}

resource "aws_vpc_security_group_egress_rule" "routes" {
  security_group_id            = aws_security_group.nats.id
  description                  = "NATS cluster routes between nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.cluster
  to_port                      = var.ports.cluster
  referenced_security_group_id = aws_security_group.nats.id
}

resource "aws_vpc_security_group_ingress_rule" "client" {
  for_each = var.client_source_security_group_ids

  security_group_id            = aws_security_group.nats.id
  description                  = "NATS clients: ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.client
  to_port                      = var.ports.client
  referenced_security_group_id = each.value
}

# Nodes reach each other's client port too (the KV mirror set-up runs on a node).
resource "aws_vpc_security_group_ingress_rule" "client_self" {
  security_group_id            = aws_security_group.nats.id
  description                  = "NATS clients on the nodes themselves"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.client
  to_port                      = var.ports.client
  referenced_security_group_id = aws_security_group.nats.id
}

resource "aws_vpc_security_group_egress_rule" "client_self" {
  security_group_id            = aws_security_group.nats.id
  description                  = "NATS clients on the nodes themselves"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.client
  to_port                      = var.ports.client
  referenced_security_group_id = aws_security_group.nats.id
}

resource "aws_vpc_security_group_ingress_rule" "leafnode" {
  for_each = var.role == "hub" ? var.leafnode_source_security_group_ids : {}

  security_group_id            = aws_security_group.nats.id
  description                  = "NATS leaf-node links through ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.leafnode
  to_port                      = var.ports.leafnode
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "leafnode" {
  for_each = var.role == "leaf" ? toset(var.hub_cidr_blocks) : toset([])

  security_group_id = aws_security_group.nats.id
  description       = "NATS leaf-node link to the hub"
  ip_protocol       = "tcp"
  from_port         = var.ports.leafnode
  to_port           = var.ports.leafnode
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "monitoring" {
  for_each = toset(var.monitoring_cidr_blocks)

  security_group_id = aws_security_group.nats.id
  description       = "NATS monitoring (HTTPS)"
  ip_protocol       = "tcp"
  from_port         = var.ports.monitoring
  to_port           = var.ports.monitoring
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.nats.id
  description       = "HTTPS to AWS APIs, release artifacts and package repositories"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
