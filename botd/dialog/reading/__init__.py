"""The parts of :func:`botd.dialog.understand.read`, one concept a module.

- :mod:`.vocab`: the lexicons folded the way words are compared, and shared word classes;
- :mod:`.tokens`: tokens (canonical words, numbers) and clauses;
- :mod:`.phones`: phone numbers anywhere in the text;
- :mod:`.counts`: the counts of one clause (number words, units, bottle sizes);
- :mod:`.quantity`: the count of the message (conflicts, swaps, "one more", take-backs);
- :mod:`.address_quality`: how address-like tokens are;
- :mod:`.address_text`: the address trimmed, joined across clauses and rendered;
- :mod:`.intents` and :mod:`.questions`: what the customer wants, asks and says;
- :mod:`.language`: the language of the words;
- :mod:`.clause`: the clauses read one by one, adding up what the message holds.

Only :mod:`botd.dialog.understand` uses them; its API is the dialog's.
"""
