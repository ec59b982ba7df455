# Global entry: one name, answered by the region closest (in latency) to the client among the
# regions whose edges report ready. A region whose health check fails drops out of the
# answers; its clients reconnect to the next closest region.

resource "aws_route53_health_check" "region" {
  for_each = var.regions

  type              = "HTTPS"
  fqdn              = each.value.nlb_dns_name
  port              = var.health_check.port
  resource_path     = var.health_check.path
  request_interval  = var.health_check.request_interval
  failure_threshold = var.health_check.failure_threshold
  measure_latency   = true
  enable_sni        = true

  tags = merge(var.tags, { Name = "tickmesh-${each.key}-readyz" })
}

resource "aws_route53_record" "region" {
  for_each = var.regions

  zone_id         = var.zone_id
  name            = var.record_name
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.region[each.key].id

  latency_routing_policy {
    region = each.value.aws_region
  }

  alias {
    name                   = each.value.nlb_dns_name
    zone_id                = each.value.nlb_zone_id
    evaluate_target_health = var.evaluate_target_health
  }
}
