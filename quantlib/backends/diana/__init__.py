"""Everything DIANA-specific: hardware rules, core descriptors and (next) the DianaModule flow and DORY export."""
