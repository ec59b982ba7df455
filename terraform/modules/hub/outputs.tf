output "leaf_urls" {
  description = "URLs leaf clusters dial: the internal NLB in front of the leaf-node listener, over TLS."
  value       = ["tls://${local.leaf_dns}:${local.ports.leafnode}"]
}

output "client_urls" {
  description = "TLS client URLs of the hub nodes."
  value       = module.nats.client_urls
}

output "domain" {
  description = "JetStream domain of the hub."
  value       = var.domain
}

output "nats_security_group_id" {
  description = "Security group of the hub's NATS nodes."
  value       = module.nats.security_group_id
}

output "nats_instance_ids" {
  description = "Hub NATS instance ID per availability zone."
  value       = module.nats.instance_ids
}

output "nats_node_names" {
  description = "DNS name of each hub node."
  value       = module.nats.node_names
}

output "leaf_nlb_dns_name" {
  description = "DNS name of the internal leaf-node NLB."
  value       = aws_lb.leaf.dns_name
}

output "ingest_autoscaling_group_name" {
  description = "Auto Scaling group of the ingest instances."
  value       = aws_autoscaling_group.ingest.name
}
