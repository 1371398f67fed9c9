"""The resolver chain's steps: acl, identity and policy, local records, filtering, cache."""
