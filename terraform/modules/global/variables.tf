variable "zone_id" {
  description = "Public Route 53 hosted zone that holds the client-facing name."
  type        = string

  validation {
    condition     = can(regex("^Z[A-Z0-9]{1,31}$", var.zone_id))
    error_message = "zone_id must be a Route 53 hosted zone ID."
  }
}

variable "record_name" {
  description = "Client-facing name, e.g. stream.example.com. Clients connect to wss://<record_name>/v1/stream."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.record_name))
    error_message = "record_name must be a fully qualified DNS name without a trailing dot."
  }
}

variable "regions" {
  description = "Regional entry points keyed by TickMesh region name: the AWS region (for latency routing) and the edge NLB."
  type = map(object({
    aws_region   = string
    nlb_dns_name = string
    nlb_zone_id  = string
  }))

  validation {
    condition     = length(var.regions) >= 1 && alltrue([for r in values(var.regions) : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", r.aws_region))])
    error_message = "regions must hold at least one entry, each with a valid AWS region name."
  }
}

variable "health_check" {
  description = "Route 53 health check of each region, against the edges' /readyz through the NLB."
  type = object({
    port              = number
    path              = string
    request_interval  = number
    failure_threshold = number
  })
  default = {
    port              = 443
    path              = "/readyz"
    request_interval  = 10
    failure_threshold = 3
  }

  validation {
    condition     = contains([10, 30], var.health_check.request_interval) && var.health_check.failure_threshold >= 1 && var.health_check.failure_threshold <= 10 && startswith(var.health_check.path, "/")
    error_message = "health_check.request_interval must be 10 or 30, failure_threshold 1-10, and path absolute."
  }
}

variable "evaluate_target_health" {
  description = "Whether the alias records also require the NLB's own target health (evaluate_target_health)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
