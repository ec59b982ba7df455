# VPC peering between the hub VPC and a regional VPC (possibly in another AWS region), with
# routes both ways: the leaf clusters reach the hub's internal leaf-node NLB through it.

data "aws_caller_identity" "accepter" {
  provider = aws.accepter
}

resource "aws_vpc_peering_connection" "this" {
  provider = aws.requester

  vpc_id        = var.requester_vpc_id
  peer_vpc_id   = var.accepter_vpc_id
  peer_region   = var.accepter_region
  peer_owner_id = data.aws_caller_identity.accepter.account_id

  tags = merge(var.tags, { Name = "tickmesh-${var.name}" })
}

resource "aws_vpc_peering_connection_accepter" "this" {
  provider = aws.accepter

  vpc_peering_connection_id = aws_vpc_peering_connection.this.id
  auto_accept               = true

  tags = merge(var.tags, { Name = "tickmesh-${var.name}" })
}

resource "aws_route" "requester" {
  provider = aws.requester
  for_each = var.requester_route_table_ids

  route_table_id            = each.value
  destination_cidr_block    = var.accepter_cidr_block
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.this.id
}

resource "aws_route" "accepter" {
  provider = aws.accepter
  for_each = var.accepter_route_table_ids

  route_table_id            = each.value
  destination_cidr_block    = var.requester_cidr_block
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.this.id
}
