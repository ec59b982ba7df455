output "endpoint" {
  description = "WebSocket URL clients connect to."
  value       = module.global.endpoint
}

output "hub_leaf_urls" {
  description = "Leaf-node URLs of the hub (internal NLB)."
  value       = module.hub.leaf_urls
}

output "ingest_autoscaling_group" {
  description = "Auto Scaling group of ingest."
  value       = module.hub.ingest_autoscaling_group_name
}

output "edge_autoscaling_groups" {
  description = "Edge Auto Scaling group per region and availability zone: roll them one zone at a time."
  value = {
    "us-east-1"      = module.region_us_east_1.edge_autoscaling_group_names
    "eu-west-1"      = module.region_eu_west_1.edge_autoscaling_group_names
    "ap-northeast-1" = module.region_ap_northeast_1.edge_autoscaling_group_names
  }
}

output "edge_nlb_dns_names" {
  description = "Public NLB of each region, for direct tests that bypass latency routing."
  value = {
    "us-east-1"      = module.region_us_east_1.nlb_dns_name
    "eu-west-1"      = module.region_eu_west_1.nlb_dns_name
    "ap-northeast-1" = module.region_ap_northeast_1.nlb_dns_name
  }
}
