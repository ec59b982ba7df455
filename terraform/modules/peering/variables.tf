variable "name" {
  description = "Name of the peering, e.g. hub-eu-west-1."
  type        = string
}

variable "requester_vpc_id" {
  description = "VPC that requests the peering (the hub)."
  type        = string
}

variable "requester_cidr_block" {
  description = "CIDR of the requester VPC."
  type        = string

  validation {
    condition     = can(cidrhost(var.requester_cidr_block, 0))
    error_message = "requester_cidr_block must be a valid CIDR."
  }
}

variable "requester_route_table_ids" {
  description = "Route tables of the requester VPC that get a route to the accepter, keyed by a static name (e.g. AZ)."
  type        = map(string)
}

variable "accepter_vpc_id" {
  description = "VPC that accepts the peering (a region)."
  type        = string
}

variable "accepter_cidr_block" {
  description = "CIDR of the accepter VPC."
  type        = string

  validation {
    condition     = can(cidrhost(var.accepter_cidr_block, 0))
    error_message = "accepter_cidr_block must be a valid CIDR."
  }
}

variable "accepter_region" {
  description = "AWS region of the accepter VPC."
  type        = string
}

variable "accepter_route_table_ids" {
  description = "Route tables of the accepter VPC that get a route to the requester, keyed by a static name."
  type        = map(string)
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
