"""What sits on the wire between the clients and the server: the delay relay (``--rtt``)
that puts the database at a chosen distance, and the check of what it injected."""
