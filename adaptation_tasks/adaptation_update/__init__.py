"""adaptation_update: short made-up fact contexts, a question answered from them, and an update that changes it."""
