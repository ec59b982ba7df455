output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "cidr_block" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "azs" {
  description = "Availability zones the network spans, in the order given."
  value       = var.azs
}

output "public_subnet_ids" {
  description = "Public subnet ID per availability zone (load balancers, NAT gateways)."
  value       = { for az, s in aws_subnet.public : az => s.id }
}

output "private_subnet_ids" {
  description = "Private subnet ID per availability zone (every instance)."
  value       = { for az, s in aws_subnet.private : az => s.id }
}

output "private_route_table_ids" {
  description = "Route table ID of each private subnet, per availability zone (for peering routes)."
  value       = { for az, rt in aws_route_table.private : az => rt.id }
}
