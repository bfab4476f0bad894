"""Invocations of the REST APIs that moto's API Gateway stores: routing,
mapping templates and integrations (see `listener`)."""

from proxy.listeners.apigateway.listener import ApiGatewayListener

__all__ = ["ApiGatewayListener"]
