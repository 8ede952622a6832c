"""NGSI-LD query languages: ``q`` (clause 4.9), ``scopeQ`` (clause 4.19) and type selectors."""
