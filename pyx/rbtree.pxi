# Red-black trees: lib/rbtree.c (rb_insert_color(), rb_erase(), rb_replace_node()) and
# include/linux/rbtree.h (rb_link_node()), unchanged since Linux 3.5 and followed step by step,
# so a tree built by the same inserts and erases has the kernel's shape (which node a search
# meets on its way down), not only its order.
#
# Departs: the nodes live in a table (nm_rb_node) beside the objects they order, addressed by
# the object's index; a link is an index, NM_NIL for NULL; colour and parent are two fields
# instead of one word; no augmented callbacks (no user needs them). The IOVA allocator keeps its
# own tree (pyx/iova.pxi, a textbook one whose shape is allowed to differ).


cdef enum:
    RB_RED = 0
    RB_BLACK = 1


cdef inline void rb_set_parent_color(nm_rb_node *t, uint32_t rb, uint32_t p,
                                     uint32_t color) noexcept nogil:
    t[rb].parent = p
    t[rb].color = color


cdef inline void __rb_change_child(nm_rb_node *t, uint32_t old, uint32_t new, uint32_t parent,
                                   uint32_t *root) noexcept nogil:
    if parent != NM_NIL:
        if t[parent].rb_left == old:
            t[parent].rb_left = new
        else:
            t[parent].rb_right = new
    else:
        root[0] = new


cdef inline void __rb_rotate_set_parents(nm_rb_node *t, uint32_t old, uint32_t new,
                                         uint32_t *root, uint32_t color) noexcept nogil:
    """``__rb_rotate_set_parents()``: ``new`` takes ``old``'s parent and colour, ``old`` gets
    ``new`` as parent and ``color``."""
    cdef uint32_t parent = t[old].parent
    rb_set_parent_color(t, new, parent, t[old].color)
    rb_set_parent_color(t, old, new, color)
    __rb_change_child(t, old, new, parent, root)


cdef inline void rb_link_node(nm_rb_node *t, uint32_t node, uint32_t parent,
                              uint32_t *rb_link) noexcept nogil:
    """Models ``rb_link_node()``: a red leaf at ``*rb_link`` under ``parent``."""
    rb_set_parent_color(t, node, parent, RB_RED)
    t[node].rb_left = t[node].rb_right = NM_NIL
    rb_link[0] = node


cdef void rb_insert_color(nm_rb_node *t, uint32_t node, uint32_t *root) noexcept nogil:
    """Models ``rb_insert_color()`` (``__rb_insert()``): rebalance after ``rb_link_node()``."""
    cdef uint32_t parent = t[node].parent, gparent, tmp
    while True:
        if parent == NM_NIL:
            rb_set_parent_color(t, node, NM_NIL, RB_BLACK)
            break
        if t[parent].color == RB_BLACK:
            break
        gparent = t[parent].parent
        tmp = t[gparent].rb_right
        if parent != tmp:                       # parent == gparent->rb_left
            if tmp != NM_NIL and t[tmp].color == RB_RED:
                # Case 1: colour flips, recurse at gparent.
                rb_set_parent_color(t, tmp, gparent, RB_BLACK)
                rb_set_parent_color(t, parent, gparent, RB_BLACK)
                node = gparent
                parent = t[node].parent
                rb_set_parent_color(t, node, parent, RB_RED)
                continue
            tmp = t[parent].rb_right
            if node == tmp:
                # Case 2: left rotate at parent.
                tmp = t[node].rb_left
                t[parent].rb_right = tmp
                t[node].rb_left = parent
                if tmp != NM_NIL:
                    rb_set_parent_color(t, tmp, parent, RB_BLACK)
                rb_set_parent_color(t, parent, node, RB_RED)
                parent = node
                tmp = t[node].rb_right
            # Case 3: right rotate at gparent.
            t[gparent].rb_left = tmp
            t[parent].rb_right = gparent
            if tmp != NM_NIL:
                rb_set_parent_color(t, tmp, gparent, RB_BLACK)
            __rb_rotate_set_parents(t, gparent, parent, root, RB_RED)
            break
        tmp = t[gparent].rb_left
        if tmp != NM_NIL and t[tmp].color == RB_RED:
            rb_set_parent_color(t, tmp, gparent, RB_BLACK)
            rb_set_parent_color(t, parent, gparent, RB_BLACK)
            node = gparent
            parent = t[node].parent
            rb_set_parent_color(t, node, parent, RB_RED)
            continue
        tmp = t[parent].rb_left
        if node == tmp:
            tmp = t[node].rb_right
            t[parent].rb_left = tmp
            t[node].rb_right = parent
            if tmp != NM_NIL:
                rb_set_parent_color(t, tmp, parent, RB_BLACK)
            rb_set_parent_color(t, parent, node, RB_RED)
            parent = node
            tmp = t[node].rb_left
        t[gparent].rb_right = tmp
        t[parent].rb_left = gparent
        if tmp != NM_NIL:
            rb_set_parent_color(t, tmp, gparent, RB_BLACK)
        __rb_rotate_set_parents(t, gparent, parent, root, RB_RED)
        break


cdef inline bint __rb_black(nm_rb_node *t, uint32_t x) noexcept nogil:
    """NULL leaves are black."""
    return x == NM_NIL or t[x].color == RB_BLACK


cdef void __rb_erase_color(nm_rb_node *t, uint32_t parent, uint32_t *root) noexcept nogil:
    """Models ``____rb_erase_color()``: restore the black height under ``parent``, whose
    ``node`` side lost a black node."""
    cdef uint32_t node = NM_NIL, sibling, tmp1, tmp2
    while True:
        sibling = t[parent].rb_right
        if node != sibling:                     # node == parent->rb_left
            if t[sibling].color == RB_RED:
                # Case 1: left rotate at parent.
                tmp1 = t[sibling].rb_left
                t[parent].rb_right = tmp1
                t[sibling].rb_left = parent
                rb_set_parent_color(t, tmp1, parent, RB_BLACK)
                __rb_rotate_set_parents(t, parent, sibling, root, RB_RED)
                sibling = tmp1
            tmp1 = t[sibling].rb_right
            if __rb_black(t, tmp1):
                tmp2 = t[sibling].rb_left
                if __rb_black(t, tmp2):
                    # Case 2: sibling colour flip.
                    rb_set_parent_color(t, sibling, parent, RB_RED)
                    if t[parent].color == RB_RED:
                        t[parent].color = RB_BLACK
                    else:
                        node = parent
                        parent = t[node].parent
                        if parent != NM_NIL:
                            continue
                    break
                # Case 3: right rotate at sibling.
                tmp1 = t[tmp2].rb_right
                t[sibling].rb_left = tmp1
                t[tmp2].rb_right = sibling
                t[parent].rb_right = tmp2
                if tmp1 != NM_NIL:
                    rb_set_parent_color(t, tmp1, sibling, RB_BLACK)
                tmp1 = sibling
                sibling = tmp2
            # Case 4: left rotate at parent, colour flips.
            tmp2 = t[sibling].rb_left
            t[parent].rb_right = tmp2
            t[sibling].rb_left = parent
            rb_set_parent_color(t, tmp1, sibling, RB_BLACK)
            if tmp2 != NM_NIL:
                t[tmp2].parent = parent
            __rb_rotate_set_parents(t, parent, sibling, root, RB_BLACK)
            break
        sibling = t[parent].rb_left
        if t[sibling].color == RB_RED:
            tmp1 = t[sibling].rb_right
            t[parent].rb_left = tmp1
            t[sibling].rb_right = parent
            rb_set_parent_color(t, tmp1, parent, RB_BLACK)
            __rb_rotate_set_parents(t, parent, sibling, root, RB_RED)
            sibling = tmp1
        tmp1 = t[sibling].rb_left
        if __rb_black(t, tmp1):
            tmp2 = t[sibling].rb_right
            if __rb_black(t, tmp2):
                rb_set_parent_color(t, sibling, parent, RB_RED)
                if t[parent].color == RB_RED:
                    t[parent].color = RB_BLACK
                else:
                    node = parent
                    parent = t[node].parent
                    if parent != NM_NIL:
                        continue
                break
            tmp1 = t[tmp2].rb_left
            t[sibling].rb_right = tmp1
            t[tmp2].rb_left = sibling
            t[parent].rb_left = tmp2
            if tmp1 != NM_NIL:
                rb_set_parent_color(t, tmp1, sibling, RB_BLACK)
            tmp1 = sibling
            sibling = tmp2
        tmp2 = t[sibling].rb_right
        t[parent].rb_left = tmp2
        t[sibling].rb_right = parent
        rb_set_parent_color(t, tmp1, sibling, RB_BLACK)
        if tmp2 != NM_NIL:
            t[tmp2].parent = parent
        __rb_rotate_set_parents(t, parent, sibling, root, RB_BLACK)
        break


cdef void rb_erase(nm_rb_node *t, uint32_t node, uint32_t *root) noexcept nogil:
    """Models ``rb_erase()`` (``__rb_erase()``): a node with two children is replaced by its
    successor, which keeps its index (as the kernel keeps its pointer)."""
    cdef uint32_t child = t[node].rb_right, tmp = t[node].rb_left
    cdef uint32_t parent, rebalance, successor, child2, pp = t[node].parent
    cdef uint32_t pcolor = t[node].color, color2
    if tmp == NM_NIL:
        # Case 1: at most one child (the right one, red if it exists).
        __rb_change_child(t, node, child, pp, root)
        if child != NM_NIL:
            rb_set_parent_color(t, child, pp, pcolor)
            rebalance = NM_NIL
        else:
            rebalance = pp if pcolor == RB_BLACK else NM_NIL
    elif child == NM_NIL:
        # Still case 1, the child on the left.
        rb_set_parent_color(t, tmp, pp, pcolor)
        __rb_change_child(t, node, tmp, pp, root)
        rebalance = NM_NIL
    else:
        successor = child
        tmp = t[child].rb_left
        if tmp == NM_NIL:
            # Case 2: the successor is the right child.
            parent = successor
            child2 = t[successor].rb_right
        else:
            # Case 3: the successor is the leftmost node under the right child.
            while tmp != NM_NIL:
                parent = successor
                successor = tmp
                tmp = t[tmp].rb_left
            child2 = t[successor].rb_right
            t[parent].rb_left = child2
            t[successor].rb_right = child
            t[child].parent = successor
        tmp = t[node].rb_left
        t[successor].rb_left = tmp
        t[tmp].parent = successor
        __rb_change_child(t, node, successor, pp, root)
        if child2 != NM_NIL:
            rb_set_parent_color(t, successor, pp, pcolor)
            rb_set_parent_color(t, child2, parent, RB_BLACK)
            rebalance = NM_NIL
        else:
            color2 = t[successor].color
            rb_set_parent_color(t, successor, pp, pcolor)
            rebalance = parent if color2 == RB_BLACK else NM_NIL
    if rebalance != NM_NIL:
        __rb_erase_color(t, rebalance, root)


cdef void rb_replace_node(nm_rb_node *t, uint32_t victim, uint32_t new,
                          uint32_t *root) noexcept nogil:
    """Models ``rb_replace_node()``: ``new`` takes ``victim``'s place, links and colour."""
    cdef uint32_t parent = t[victim].parent
    t[new] = t[victim]
    if t[victim].rb_left != NM_NIL:
        t[t[victim].rb_left].parent = new
    if t[victim].rb_right != NM_NIL:
        t[t[victim].rb_right].parent = new
    __rb_change_child(t, victim, new, parent, root)
