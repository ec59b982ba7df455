output "endpoint" {
  description = "WebSocket URL clients connect to."
  value       = "wss://${var.record_name}/v1/stream"
}

output "health_check_ids" {
  description = "Route 53 health check per region."
  value       = { for k, h in aws_route53_health_check.region : k => h.id }
}
