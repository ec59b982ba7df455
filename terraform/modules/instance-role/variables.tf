variable "name" {
  description = "Name prefix of the role and its instance profile."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{1,37}$", var.name))
    error_message = "name must be 2-38 characters of letters, digits and dashes (the role name gets a suffix)."
  }
}

variable "artifact_object_arns" {
  description = "S3 object ARNs (or ARN patterns ending in /*) the instances may download release artifacts from."
  type        = list(string)

  validation {
    condition     = length(var.artifact_object_arns) > 0 && alltrue([for a in var.artifact_object_arns : can(regex("^arn:aws[a-z-]*:s3:::[^*]+/", a))])
    error_message = "artifact_object_arns must be S3 object ARNs under a named bucket (no bucket wildcard)."
  }
}

variable "secret_arns" {
  description = "Secrets Manager secret ARNs the instances read at boot (TLS material, NATS credentials, JWT keys)."
  type        = list(string)

  validation {
    condition     = length(var.secret_arns) > 0 && alltrue([for a in var.secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:", a))])
    error_message = "secret_arns must be Secrets Manager secret ARNs."
  }
}

variable "kms_key_arns" {
  description = "Customer managed KMS keys that encrypt those secrets; empty when they use the AWS managed key."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", a))])
    error_message = "kms_key_arns must be KMS key ARNs."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
