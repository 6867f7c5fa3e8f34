"""What a job says: its events, the bus that fans them out live, and the SSE framing."""
