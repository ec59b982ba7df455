terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Keep state remote and locked; fill in for your account:
  # backend "s3" {
  #   bucket         = "<state bucket>"
  #   key            = "tickmesh/example.tfstate"
  #   region         = "us-east-1"
  #   dynamodb_table = "<lock table>"
  #   encrypt        = true
  # }
}
