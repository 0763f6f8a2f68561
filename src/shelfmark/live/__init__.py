"""Live events for the staff desk (SSE and WebSocket)."""
