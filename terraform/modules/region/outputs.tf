output "domain" {
  description = "Name and JetStream domain of the region."
  value       = var.domain
}

output "nlb_dns_name" {
  description = "DNS name of the region's public edge NLB."
  value       = aws_lb.edge.dns_name
}

output "nlb_zone_id" {
  description = "Route 53 zone ID of the edge NLB (for alias records)."
  value       = aws_lb.edge.zone_id
}

output "edge_autoscaling_group_names" {
  description = "Edge Auto Scaling group per availability zone; roll them one at a time."
  value       = { for az, g in aws_autoscaling_group.edge : az => g.name }
}

output "edge_target_group_arn" {
  description = "Target group of the edges."
  value       = aws_lb_target_group.edge.arn
}

output "edge_release_versions" {
  description = "Release each availability zone's edge group runs."
  value       = local.edge_versions
}

output "leaf_client_urls" {
  description = "TLS client URLs of the leaf nodes."
  value       = module.leaf.client_urls
}

output "leaf_instance_ids" {
  description = "Leaf NATS instance ID per availability zone."
  value       = module.leaf.instance_ids
}
