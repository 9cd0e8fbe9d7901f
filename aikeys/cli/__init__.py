"""The `aikeys` command line (also installed as the kubectl plugin `kubectl-aikeys`)."""
