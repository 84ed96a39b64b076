"""The order path shared by paper and live: sizing, pre-trade risk, routing and algos, the order manager."""
