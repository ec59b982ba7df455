# Only what must come in: clients on 443 reach the NLB; the NLB reaches the edges' serving and
# health-check port; the monitoring network reaches their metrics port; edges reach the leaf
# nodes' client port. NATS ports are never public.

resource "aws_security_group" "edge_nlb" {
  name_prefix = "${local.name}-edge-nlb-"
  description = "Public NLB in front of the ${var.domain} edges"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${local.name}-edge-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "edge_nlb_clients" {
  for_each = toset(var.client_cidr_blocks)

  security_group_id = aws_security_group.edge_nlb.id
  description       = "WebSocket clients (wss) from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "edge_nlb_targets" {
  security_group_id            = aws_security_group.edge_nlb.id
  description                  = "Client traffic and /readyz health checks to the edges"
  ip_protocol                  = "tcp"
  from_port                    = local.target_port
  to_port                      = local.target_port
  referenced_security_group_id = aws_security_group.edge.id
}

resource "aws_security_group" "edge" {
  name_prefix = "${local.name}-edge-"
  description = "TickMesh edge gateways in ${var.domain}"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${local.name}-edge" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "edge_from_nlb" {
  security_group_id            = aws_security_group.edge.id
  description                  = "Client traffic and /readyz health checks from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = local.target_port
  to_port                      = local.target_port
  referenced_security_group_id = aws_security_group.edge_nlb.id
}

# /metrics has its own port (metrics_listen), open to the monitoring network only: the NLB
# neither forwards it nor reaches it, and the client port does not serve /metrics.
resource "aws_vpc_security_group_ingress_rule" "edge_metrics" {
  for_each = toset(var.monitoring_cidr_blocks)

  security_group_id = aws_security_group.edge.id
  description       = "Prometheus scrapes of /metrics"
  ip_protocol       = "tcp"
  from_port         = var.edge_metrics_port
  to_port           = var.edge_metrics_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "edge_nats" {
  security_group_id            = aws_security_group.edge.id
  description                  = "NATS client connections to the leaf nodes (TLS)"
  ip_protocol                  = "tcp"
  from_port                    = local.nats_ports.client
  to_port                      = local.nats_ports.client
  referenced_security_group_id = module.leaf.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "edge_https" {
  security_group_id = aws_security_group.edge.id
  description       = "HTTPS to AWS APIs, release artifacts and package repositories"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}
