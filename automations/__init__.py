"""automations"""
