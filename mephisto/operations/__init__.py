"""Operations layer: launching, running, reviewing and exporting task runs.

May import every layer below it (errors, data_model, db, contracts, server, plugins).
"""
