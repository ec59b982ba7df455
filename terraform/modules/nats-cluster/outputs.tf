output "security_group_id" {
  description = "Security group of the NATS nodes."
  value       = aws_security_group.nats.id
}

output "instance_ids" {
  description = "Instance ID per availability zone."
  value       = { for az, i in aws_instance.node : az => i.id }
}

output "private_ips" {
  description = "Fixed private IP per availability zone."
  value       = { for az, eni in aws_network_interface.node : az => eni.private_ip }
}

output "node_names" {
  description = "DNS name per availability zone."
  value       = local.node_names
}

output "client_urls" {
  description = "Client URLs of every node, for edge and ingest configs. The nodes accept TLS only; clients require it and verify the nodes with the deployment's CA ([nats.tls] ca_file)."
  value       = [for az in var.azs : "nats://${local.node_names[az]}:${var.ports.client}"]
}

output "ports" {
  description = "NATS ports of the nodes."
  value       = var.ports
}

output "role_name" {
  description = "IAM role of the nodes."
  value       = module.role.role_name
}
