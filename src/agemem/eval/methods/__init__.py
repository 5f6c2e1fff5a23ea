"""The methods `agemem eval` compares, all behind one interface (`base.EvalMethod`)."""
