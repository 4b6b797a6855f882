"""How a scene is cut: the tile plan anchored to the scene (tiles, chunks, who hands blend sums to
whom) and the cosine blend windows. Pure numpy; may import geometry only.
"""
