"""Pydantic models shared by the agent and the operator: the wire formats."""
