"""What every vendor builds on: the translator and emulator bases, auth, checks."""
