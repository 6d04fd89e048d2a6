"""On-policy (iterative) DPO: rounds of sampling from the current policy, judging, pairing best against worst, training."""
